"""Two virtual networks for the traffic tests, and a network policy between them.

usage: agent_vns.py TARGET setup HOST_IF_RED HOST_IF_BLUE
           builds VNs red (10.45.1.0/24) and blue (10.45.2.0/24), one pod interface in
           each plugged as a host interface (packet:); prints the ports as JSON lines
       agent_vns.py TARGET policy ACTION [PROTO]
           (re)creates network policy red-blue (<>, ACTION pass|deny, PROTO any|tcp|udp|icmp)
           and attaches it to both VNs
       agent_vns.py TARGET nopolicy
           detaches and deletes the policy
"""

import json
import sys

from vnc import Agent, pb, ref

TARGET, CMD, *ARGS = sys.argv[1:]
a = Agent(TARGET)
P = ["default-domain", "vns"]
NETS = {"red": "10.45.1.0/24", "blue": "10.45.2.0/24"}


def set_policy_refs(refs):
    a.set_policy_refs([P + [net] for net in NETS], refs)


if CMD == "setup":
    a.create(project=pb.Project(fq_name=P))
    a.create(network_ipam=pb.NetworkIpam(fq_name=P + ["ipam"]))
    for i, (net, prefix) in enumerate(NETS.items()):
        a.create(virtual_network=pb.VirtualNetwork(
            fq_name=P + [net], network_ipam_refs=[pb.IpamRef(
                ipam=ref("network-ipam", P + ["ipam"]), subnets=[pb.Subnet(prefix=prefix)])]))
        name = f"{net}-pod"
        vmi = a.create(virtual_machine_interface=pb.VirtualMachineInterface(
            fq_name=P + [name],
            virtual_network_ref=ref("virtual-network", P + [net]))).virtual_machine_interface
        a.create(instance_ip=pb.InstanceIp(
            fq_name=[name + "-ip"], virtual_network_ref=ref("virtual-network", P + [net]),
            virtual_machine_interface_refs=[ref("virtual-machine-interface", P + [name])]))
        info = a.agent.AddPort(pb.Port(vmi_uuid=vmi.uuid, name=name,
                                       device=f"packet:{ARGS[i]}"), timeout=60)
        print(json.dumps({"name": name, "mac": info.mac_address, "ip": info.ip_addresses[0],
                          "gateway": info.gateway, "vif": info.vif}))
elif CMD == "policy":
    action, proto = ARGS[0], (ARGS[1] if len(ARGS) > 1 else "any")
    if any(o.network_policy.fq_name == P + ["red-blue"] for o in a.list("network-policy")):
        set_policy_refs([])
        a.delete("network-policy", P + ["red-blue"])
    a.create(network_policy=pb.NetworkPolicy(fq_name=P + ["red-blue"], network_policy_entries=[
        pb.PolicyRule(direction="<>", protocol=proto, action=action,
                      src_addresses=[pb.AddressType(virtual_network=":".join(P + ["red"]))],
                      dst_addresses=[pb.AddressType(virtual_network=":".join(P + ["blue"]))])]))
    set_policy_refs([ref("network-policy", P + ["red-blue"])])
elif CMD == "nopolicy":
    set_policy_refs([])
    a.delete("network-policy", P + ["red-blue"])
else:
    sys.exit(f"unknown command {CMD}")
a.wait_programmed()
