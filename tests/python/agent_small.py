"""Helpers for the restart / reconcile tests.

usage: agent_small.py TARGET build     one VN, two interfaces with ports (no device)
       agent_small.py TARGET status    waits until programmed, prints the status as JSON
       agent_small.py TARGET add-vm N  one more interface with a port
       agent_small.py TARGET snat-ports TCP0 TCP1 UDP0 UDP1
                                       SNAT pools in the global vrouter configuration
                                       (bad pools first: refused), waits until programmed
"""

import json
import sys

import grpc

from vnc import Agent, expect_error, pb, ref

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
elif PHASE == "snat-ports":
    t0, t1, u0, u1 = (int(x) for x in sys.argv[3:7])
    G = ["default-global-system-config", "default-global-vrouter-config"]
    pool = pb.PortTranslationPool

    def gvc(pools):
        return pb.GlobalVrouterConfig(fq_name=G, port_translation_pools=pools)

    # Privileged ports, an empty range and two pools of one protocol are refused.
    for bad, where in [([pool(protocol="tcp", start_port=80, end_port=90)], "[0]"),
                       ([pool(protocol="udp", start_port=2000, end_port=1999)], "[0]"),
                       ([pool(protocol="tcp", start_port=2000, end_port=2001),
                         pool(protocol="tcp", start_port=3000, end_port=3001)], "[1]")]:
        expect_error(grpc.StatusCode.INVALID_ARGUMENT, a.create, global_vrouter_config=gvc(bad),
                     contains="port_translation_pools" + where)
    a.create(global_vrouter_config=gvc([pool(protocol="tcp", start_port=t0, end_port=t1),
                                        pool(protocol="udp", start_port=u0, end_port=u1)]))
    a.wait_programmed()
elif PHASE == "status":
    s = a.wait_programmed()
    print(json.dumps({"reconciles": s.reconciles, "ops": s.vrouter_ops,
                      "revision": s.config_revision, "error": s.last_error}))
else:
    raise SystemExit(f"unknown phase {PHASE}")
