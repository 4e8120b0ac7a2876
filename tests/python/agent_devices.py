"""Hostile AddPort devices, for the device allow-list test.

usage: agent_devices.py TARGET SCRATCH HOST_IF
    builds a network with one interface, then asks AddPort for devices that name files,
    host NICs, the loopback, options off the list and drivers off the list; prints one JSON
    line per try with the gRPC status code and message; then plugs the interface on the
    veth HOST_IF and prints the port as a JSON line
"""

import json
import sys

import grpc

from vnc import Agent, pb, ref

TARGET, SCRATCH, HOST_IF = sys.argv[1:]
a = Agent(TARGET)
D = ["default-domain", "default-project"]
NET = D + ["pods"]

a.create(project=pb.Project(fq_name=D))
a.create(network_ipam=pb.NetworkIpam(fq_name=D + ["ipam"]))
a.create(virtual_network=pb.VirtualNetwork(
    fq_name=NET, network_ipam_refs=[pb.IpamRef(
        ipam=ref("network-ipam", D + ["ipam"]), subnets=[pb.Subnet(prefix="10.47.1.0/24")])]))
vmi = a.create(virtual_machine_interface=pb.VirtualMachineInterface(
    fq_name=D + ["pod"], virtual_network_ref=ref("virtual-network", NET))
).virtual_machine_interface
a.create(instance_ip=pb.InstanceIp(
    fq_name=["pod-ip"], virtual_network_ref=ref("virtual-network", NET),
    virtual_machine_interface_refs=[ref("virtual-machine-interface", D + ["pod"])]))

HOSTILE = [
    f"net_pcap77,rx_pcap={SCRATCH}/in.pcap,tx_pcap={SCRATCH}/pwned.pcap",
    f"net_pcap78,iface=lo",
    "net_af_packet9,iface=lo",
    "net_af_packet9,iface=eth0",
    f"net_af_packet9,iface={HOST_IF},blocksz=4096,framecnt=1,rx_pcap={SCRATCH}/x.pcap",
    "net_tap9,iface=lo",
    f"net_tap9,iface=tapx9,remote={HOST_IF}",
    f"net_vhost9,iface={SCRATCH}/vh.sock",
    "net_ring_vrperf_in",
    "net_af_packet9,iface=../../etc",
    "net_af_packet9,iface=x\ny",
    "packet:lo",
    "packet:eth0",
    "packet:../../etc",
    f"packet:{HOST_IF},iface=eth0",
]
for dev in HOSTILE:
    try:
        a.agent.AddPort(pb.Port(vmi_uuid=vmi.uuid, name="evil", device=dev), timeout=30)
        print(json.dumps({"device": dev, "code": "OK"}))
    except grpc.RpcError as e:
        print(json.dumps({"device": dev, "code": e.code().name, "message": e.details()}))

info = a.agent.AddPort(pb.Port(vmi_uuid=vmi.uuid, name="pod",
                               device=f"packet:{HOST_IF}"), timeout=60)
print(json.dumps({"name": "pod", "mac": info.mac_address, "ip": info.ip_addresses[0],
                  "gateway": info.gateway, "vif": info.vif}))
a.wait_programmed()
