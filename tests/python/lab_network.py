"""Creates a virtual network through the VNC API, the way an operator prepares a custom
network before pods name it.

usage: lab_network.py TARGET NETWORK_FQ IPAM_FQ     (FQ names joined with ':')
"""

import sys

from vnc import Agent, pb, ref

TARGET, NETWORK, IPAM = sys.argv[1:]
a = Agent(TARGET)
a.create(virtual_network=pb.VirtualNetwork(
    fq_name=NETWORK.split(":"),
    network_ipam_refs=[pb.IpamRef(ipam=ref("network-ipam", IPAM.split(":")))]))
a.wait_programmed()
print("created", NETWORK)
