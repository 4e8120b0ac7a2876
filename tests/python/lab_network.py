"""Creates a virtual network through the VNC API, the way an operator prepares a custom
network before pods (or ingresses) name it. With PEER networks, a network policy passing
everything between the new network and each of them is attached to the new network.

usage: lab_network.py TARGET NETWORK_FQ IPAM_FQ [PEER_FQ ...]   (FQ names joined with ':')

With VN_UUID set, the network gets that uuid.
"""

import os
import sys

from vnc import Agent, pb, ref

TARGET, NETWORK, IPAM, *PEERS = sys.argv[1:]
a = Agent(TARGET)
policies = []
if PEERS:
    fq = NETWORK.split(":")
    policy = fq[:-1] + [fq[-1] + "-access"]
    a.create(network_policy=pb.NetworkPolicy(
        fq_name=policy,
        network_policy_entries=[
            pb.PolicyRule(
                direction="<>", protocol="any", action="pass",
                src_addresses=[pb.AddressType(virtual_network=NETWORK)],
                dst_addresses=[pb.AddressType(virtual_network=peer)])
            for peer in PEERS]))
    policies.append(ref("network-policy", policy))
a.create(virtual_network=pb.VirtualNetwork(
    uuid=os.environ.get("VN_UUID", ""),
    fq_name=NETWORK.split(":"),
    network_ipam_refs=[pb.IpamRef(ipam=ref("network-ipam", IPAM.split(":")))],
    network_policy_refs=policies))
a.wait_programmed()
print("created", NETWORK)
