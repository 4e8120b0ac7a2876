"""Helpers for the restart / reconcile tests.

usage: agent_small.py TARGET build     one VN, two interfaces with ports (no device)
       agent_small.py TARGET status    waits until programmed, prints the status as JSON
       agent_small.py TARGET add-vm N  one more interface with a port
"""

import json
import sys

from vnc import Agent, pb, ref

TARGET, PHASE = sys.argv[1:3]
a = Agent(TARGET)
P = ["default-domain", "small"]


def vm(name):
    vmi = a.create(virtual_machine_interface=pb.VirtualMachineInterface(
        fq_name=P + [name], virtual_network_ref=ref("virtual-network", P + ["net"]))).virtual_machine_interface
    a.create(instance_ip=pb.InstanceIp(
        fq_name=[name + "-ip"], virtual_network_ref=ref("virtual-network", P + ["net"]),
        virtual_machine_interface_refs=[ref("virtual-machine-interface", P + [name])]))
    a.agent.AddPort(pb.Port(vmi_uuid=vmi.uuid, name=name), timeout=30)


if PHASE == "build":
    a.create(project=pb.Project(fq_name=P))
    a.create(network_ipam=pb.NetworkIpam(fq_name=P + ["ipam"]))
    a.create(virtual_network=pb.VirtualNetwork(
        fq_name=P + ["net"], network_ipam_refs=[pb.IpamRef(
            ipam=ref("network-ipam", P + ["ipam"]), subnets=[pb.Subnet(prefix="10.5.0.0/24")])]))
    vm("vm1")
    vm("vm2")
    a.wait_programmed()
elif PHASE == "add-vm":
    vm(sys.argv[3])
    a.wait_programmed()
elif PHASE == "status":
    s = a.wait_programmed()
    print(json.dumps({"reconciles": s.reconciles, "ops": s.vrouter_ops,
                      "revision": s.config_revision, "error": s.last_error}))
else:
    raise SystemExit(f"unknown phase {PHASE}")
