"""Two nodes, one configuration: the same objects (same UUIDs) go to both agents, as a
central API server would hand them out; each node plugs its own pod, and both pods back a
service VIP.

usage: agent_multi.py TARGET_A TARGET_B build
       agent_multi.py TARGET_A TARGET_B unplug-b
"""

import sys

from vnc import Agent, pb, ref

A, B, PHASE = sys.argv[1:4]
agents = [Agent(A), Agent(B)]
P = ["default-domain", "multi"]
U = {name: f"00000000-0000-4000-8000-{i:012x}" for i, name in enumerate(
    ["project", "ipam", "net", "vmi-a", "vmi-b", "ip-a", "ip-b", "vip"], start=1)}
net = ref("virtual-network", P + ["net"])

if PHASE == "build":
    for a in agents:
        a.create(project=pb.Project(uuid=U["project"], fq_name=P))
        a.create(network_ipam=pb.NetworkIpam(uuid=U["ipam"], fq_name=P + ["ipam"]))
        a.create(virtual_network=pb.VirtualNetwork(
            uuid=U["net"], fq_name=P + ["net"], network_ipam_refs=[pb.IpamRef(
                ipam=ref("network-ipam", P + ["ipam"]), subnets=[pb.Subnet(prefix="10.60.0.0/24")])]))
        for pod, addr in (("a", "10.60.0.10"), ("b", "10.60.0.11")):
            a.create(virtual_machine_interface=pb.VirtualMachineInterface(
                uuid=U[f"vmi-{pod}"], fq_name=P + [f"pod-{pod}"], virtual_network_ref=net))
            a.create(instance_ip=pb.InstanceIp(
                uuid=U[f"ip-{pod}"], fq_name=[f"pod-{pod}-ip"], instance_ip_address=addr,
                virtual_network_ref=net,
                virtual_machine_interface_refs=[ref("virtual-machine-interface", P + [f"pod-{pod}"])]))
        a.create(instance_ip=pb.InstanceIp(
            uuid=U["vip"], fq_name=["svc-vip"], instance_ip_address="10.60.0.100",
            service_instance_ip=True, virtual_network_ref=net,
            virtual_machine_interface_refs=[ref("virtual-machine-interface", P + ["pod-a"]),
                                            ref("virtual-machine-interface", P + ["pod-b"])]))
    agents[0].agent.AddPort(pb.Port(vmi_uuid=U["vmi-a"], name="pod-a"), timeout=30)
    agents[1].agent.AddPort(pb.Port(vmi_uuid=U["vmi-b"], name="pod-b"), timeout=30)
elif PHASE == "unplug-b":
    agents[1].agent.DeletePort(pb.PortRef(vmi_uuid=U["vmi-b"]), timeout=30)
else:
    raise SystemExit(f"unknown phase {PHASE}")
for a in agents:
    a.wait_programmed()
