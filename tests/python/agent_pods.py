"""Builds pods for the traffic tests: one VN, one interface per host-side veth, each
plugged as a host interface (packet:); prints the ports as JSON lines (name, mac, ip/len, gateway).

usage: agent_pods.py [--aap0 PREFIX] TARGET HOST_IF...
  --aap0 PREFIX   gives pod0's interface an allowed address pair (its own MAC)
"""

import json
import sys

from vnc import Agent, pb, ref

args = sys.argv[1:]
AAP0 = None
if args[:1] == ["--aap0"]:
    AAP0, args = args[1], args[2:]
TARGET, *HOST_IFS = args
a = Agent(TARGET)
P = ["default-domain", "pods"]
a.create(project=pb.Project(fq_name=P))
a.create(network_ipam=pb.NetworkIpam(fq_name=P + ["ipam"]))
a.create(virtual_network=pb.VirtualNetwork(
    fq_name=P + ["pod-net"], network_ipam_refs=[pb.IpamRef(
        ipam=ref("network-ipam", P + ["ipam"]), subnets=[pb.Subnet(prefix="10.44.0.0/24")])]))
for i, host_if in enumerate(HOST_IFS):
    name = f"pod{i}"
    pairs = [pb.AllowedAddressPair(ip_prefix=AAP0)] if i == 0 and AAP0 else []
    vmi = a.create(virtual_machine_interface=pb.VirtualMachineInterface(
        fq_name=P + [name], virtual_network_ref=ref("virtual-network", P + ["pod-net"]),
        allowed_address_pairs=pairs)).virtual_machine_interface
    a.create(instance_ip=pb.InstanceIp(
        fq_name=[name + "-ip"], virtual_network_ref=ref("virtual-network", P + ["pod-net"]),
        virtual_machine_interface_refs=[ref("virtual-machine-interface", P + [name])]))
    info = a.agent.AddPort(pb.Port(vmi_uuid=vmi.uuid, name=name,
                                   device=f"packet:{host_if}"), timeout=60)
    print(json.dumps({"name": name, "mac": info.mac_address, "ip": info.ip_addresses[0],
                      "gateway": info.gateway, "vif": info.vif}))
a.wait_programmed()
