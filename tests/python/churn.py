"""Plug/unplug churn through the agent: interfaces of the pod network (agent_pods.py made
it) plugged into and taken out of the vrouter, over and over.

usage: churn.py TARGET CYCLES HOST_IF...
       makes one interface per HOST_IF (unless an earlier run made it), then CYCLES times plugs one (in turn) and
       unplugs it again; prints a JSON line with the cycles done and the seconds taken
"""

import json
import sys
import time

from vnc import Agent, pb, ref

TARGET, CYCLES, *HOST_IFS = sys.argv[1:]
a = Agent(TARGET)
P = ["default-domain", "pods"]
existing = {tuple(o.virtual_machine_interface.fq_name): o.virtual_machine_interface.uuid
            for o in a.list("virtual-machine-interface")}
vmis = []
for i, _ in enumerate(HOST_IFS):
    name = f"churn{i}"
    if tuple(P + [name]) in existing:
        vmis.append(existing[tuple(P + [name])])
        continue
    vmi = a.create(virtual_machine_interface=pb.VirtualMachineInterface(
        fq_name=P + [name], virtual_network_ref=ref("virtual-network", P + ["pod-net"]))).virtual_machine_interface
    a.create(instance_ip=pb.InstanceIp(
        fq_name=[name + "-ip"], virtual_network_ref=ref("virtual-network", P + ["pod-net"]),
        virtual_machine_interface_refs=[ref("virtual-machine-interface", P + [name])]))
    vmis.append(vmi.uuid)
start = time.time()
for c in range(int(CYCLES)):
    i = c % len(HOST_IFS)
    a.agent.AddPort(pb.Port(vmi_uuid=vmis[i], name=f"churn{i}",
                            device=f"packet:{HOST_IFS[i]}"), timeout=60)
    a.agent.DeletePort(pb.PortRef(vmi_uuid=vmis[i]), timeout=60)
    if (c + 1) % 100 == 0:
        print(f"progress {c + 1}", file=sys.stderr, flush=True)
a.wait_programmed()
print(json.dumps({"cycles": int(CYCLES), "seconds": round(time.time() - start, 2)}))
