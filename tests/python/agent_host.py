"""The host and a pod network, for the vhost0 test.

usage: agent_host.py TARGET setup HOST_IF
           builds the ip-fabric network (default-domain:default-project:ip-fabric) and a pod
           network (10.46.1.0/24) with one pod interface plugged as a host interface (packet:);
           prints the port as a JSON line
       agent_host.py TARGET policy
           a network policy passing everything between the two, attached to both
       agent_host.py TARGET nopolicy
           detaches and deletes it
"""

import json
import sys

from vnc import Agent, pb, ref

TARGET, CMD, *ARGS = sys.argv[1:]
a = Agent(TARGET)
D = ["default-domain", "default-project"]
FABRIC = D + ["ip-fabric"]
PODS = D + ["pods"]
POLICY = D + ["fabric-pods"]


def set_policy_refs(refs):
    a.set_policy_refs([FABRIC, PODS], refs)


if CMD == "setup":
    a.create(project=pb.Project(fq_name=D))
    a.create(network_ipam=pb.NetworkIpam(fq_name=D + ["ipam"]))
    a.create(virtual_network=pb.VirtualNetwork(fq_name=FABRIC))
    a.create(virtual_network=pb.VirtualNetwork(
        fq_name=PODS, network_ipam_refs=[pb.IpamRef(
            ipam=ref("network-ipam", D + ["ipam"]), subnets=[pb.Subnet(prefix="10.46.1.0/24")])]))
    vmi = a.create(virtual_machine_interface=pb.VirtualMachineInterface(
        fq_name=D + ["pod"], virtual_network_ref=ref("virtual-network", PODS))
    ).virtual_machine_interface
    a.create(instance_ip=pb.InstanceIp(
        fq_name=["pod-ip"], virtual_network_ref=ref("virtual-network", PODS),
        virtual_machine_interface_refs=[ref("virtual-machine-interface", D + ["pod"])]))
    info = a.agent.AddPort(pb.Port(vmi_uuid=vmi.uuid, name="pod",
                                   device=f"packet:{ARGS[0]}"), timeout=60)
    print(json.dumps({"name": "pod", "mac": info.mac_address, "ip": info.ip_addresses[0],
                      "gateway": info.gateway, "vif": info.vif}))
elif CMD == "policy":
    a.create(network_policy=pb.NetworkPolicy(fq_name=POLICY, network_policy_entries=[
        pb.PolicyRule(direction="<>", protocol="any", action="pass",
                      src_addresses=[pb.AddressType(virtual_network=":".join(FABRIC))],
                      dst_addresses=[pb.AddressType(virtual_network=":".join(PODS))])]))
    set_policy_refs([ref("network-policy", POLICY)])
elif CMD == "nopolicy":
    set_policy_refs([])
    a.delete("network-policy", POLICY)
else:
    sys.exit(f"unknown command {CMD}")
a.wait_programmed()
