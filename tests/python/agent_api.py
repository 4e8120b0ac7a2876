"""Drives a real agent (and the vrouter behind it) through its gRPC API the way an
orchestrator does: a two-VN topology with a network policy between the VNs, a security
group, a service VIP on two interfaces, then invalid requests that must be refused with
the right code while nothing changes. The vrouter's tables are read back with `vrctl
--json`.

usage: agent_api.py TARGET VRCTL SOCKET
"""

import sys
import threading

import grpc

from vnc import Agent, expect_error, pb, ref, vrctl

TARGET, VRCTL, SOCKET = sys.argv[1:4]
BASE_VIF = 16
a = Agent(TARGET)
D = "default-domain"
P = [D, "demo"]


def tables():
    """The agent's part of the vrouter tables."""
    vifs = [v for v in vrctl(VRCTL, SOCKET, "vif") if v["id"] >= BASE_VIF]
    vrfs = sorted(v["id"] for v in vrctl(VRCTL, SOCKET, "vrf") if v["id"] >= 1)
    routes = {vrf: sorted((r["prefix"], r["nh"], r["label"]) for r in vrctl(VRCTL, SOCKET, "rt", "--dump", str(vrf)))
              for vrf in vrfs}
    nhs = sorted((n["id"], n["type"]) for n in vrctl(VRCTL, SOCKET, "nh") if n["id"] >= 64)
    pols = {p["name"]: p for p in vrctl(VRCTL, SOCKET, "policy")}
    return {"vifs": sorted(vifs, key=lambda v: v["id"]), "routes": routes, "nhs": nhs,
            "policies": pols, "vnis": vrctl(VRCTL, SOCKET, "vxlan"),
            "labels": vrctl(VRCTL, SOCKET, "mpls")}


# Health and reflection answer (raw frames: the standard services' protos are tiny).
check = a.channel.unary_unary("/grpc.health.v1.Health/Check")
assert check(b"", timeout=5) == b"\x08\x01", "health: SERVING"
refl = a.channel.stream_stream("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo")
answer = b"".join(refl(iter([b"\x3a\x00"]), timeout=5))
assert b"vnc.v1.ConfigApi" in answer and b"vnc.v1.AgentApi" in answer, answer

# A watcher sees every virtual network as it is created.
events = []
watch = a.config.Watch(pb.WatchRequest(types=["virtual-network"], initial=True))


def follow():
    try:
        for e in watch:
            events.append(e)
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.CANCELLED, e


threading.Thread(target=follow, daemon=True).start()

# --- the topology ---------------------------------------------------------------------
a.create(project=pb.Project(fq_name=P))
a.create(network_ipam=pb.NetworkIpam(fq_name=P + ["ipam"]))
ipam = ref("network-ipam", P + ["ipam"])


def vn(name, prefix, vni=0):
    return a.create(virtual_network=pb.VirtualNetwork(
        fq_name=P + [name], vxlan_network_identifier=vni,
        network_ipam_refs=[pb.IpamRef(ipam=ipam, subnets=[pb.Subnet(prefix=prefix)])]))


red = vn("red", "10.1.0.0/24")
blue = vn("blue", "10.2.0.0/24", vni=5002)
assert red.virtual_network.forwarding_mode == "l2_l3"
assert blue.virtual_network.vxlan_network_identifier == 5002
assert red.virtual_network.virtual_network_network_id != blue.virtual_network.virtual_network_network_id

a.create(security_group=pb.SecurityGroup(fq_name=P + ["web"], security_group_entries=[
    pb.PolicyRule(protocol="tcp", src_addresses=[pb.AddressType(subnet="0.0.0.0/0")],
                  dst_addresses=[pb.AddressType(security_group="local")],
                  dst_ports=[pb.PortRange(start_port=80, end_port=80)]),
    pb.PolicyRule(protocol="any", src_addresses=[pb.AddressType(security_group="local")],
                  dst_addresses=[pb.AddressType(subnet="0.0.0.0/0")]),
]))

ports = {}
for name, net, sg in [("red-a", "red", None), ("red-b", "red", None), ("blue-a", "blue", "web")]:
    a.create(virtual_machine=pb.VirtualMachine(fq_name=[name]))
    vmi = a.create(virtual_machine_interface=pb.VirtualMachineInterface(
        fq_name=P + [name],
        virtual_network_ref=ref("virtual-network", P + [net]),
        virtual_machine_ref=ref("virtual-machine", [name]),
        security_group_refs=[ref("security-group", P + [sg])] if sg else [])).virtual_machine_interface
    assert vmi.mac_address.startswith("02:"), vmi.mac_address
    iip = a.create(instance_ip=pb.InstanceIp(
        fq_name=[name + "-ip"], virtual_network_ref=ref("virtual-network", P + [net]),
        virtual_machine_interface_refs=[ref("virtual-machine-interface", P + [name])])).instance_ip
    assert iip.instance_ip_address.startswith("10.1.0." if net == "red" else "10.2.0."), iip
    info = a.agent.AddPort(pb.Port(vmi_uuid=vmi.uuid, name=name), timeout=30)
    assert info.ip_addresses == [iip.instance_ip_address + "/24"], info
    assert info.gateway.endswith(".1") and info.mac_address == vmi.mac_address, info
    ports[name] = (vmi, iip, info)

# Allocation skips the gateway and DNS addresses: the first VM gets .3.
assert ports["red-a"][1].instance_ip_address == "10.1.0.3"
assert ports["red-b"][1].instance_ip_address == "10.1.0.4"

a.wait_programmed()
t = tables()
assert [v["name"] for v in t["vifs"]] == ["red-a", "red-b", "blue-a"], t["vifs"]
vrf = {v["name"]: v["vrf"] for v in t["vifs"]}
assert vrf["red-a"] == vrf["red-b"] != vrf["blue-a"]
assert {v["vni"]: v["vrf"] for v in t["vnis"]}[5002] == vrf["blue-a"]
assert [r[0] for r in t["routes"][vrf["red-a"]]] == ["10.1.0.3/32", "10.1.0.4/32"]
assert [r[0] for r in t["routes"][vrf["blue-a"]]] == ["10.2.0.3/32"], "no leak without a policy"
blue_vif = next(v for v in t["vifs"] if v["name"] == "blue-a")
assert blue_vif["ip4"] == "10.2.0.3"
sg_in = [n for n in blue_vif["ingress"] if n.startswith("agent/sg/")]
assert len(sg_in) == 1, blue_vif
rules = t["policies"][sg_in[0]]["rules"]
assert rules == [{"proto": 6, "src": {"prefix": "0.0.0.0/0"}, "dst": {}, "sport": None,
                  "dport": [80, 80], "action": "pass"}], rules
assert t["policies"][sg_in[0]]["default"] == "deny"

# --- a network policy between the VNs: routes leak both ways, rules compiled ------------
a.create(network_policy=pb.NetworkPolicy(fq_name=P + ["red-blue"], network_policy_entries=[
    pb.PolicyRule(direction="<>", protocol="tcp", action="pass",
                  src_addresses=[pb.AddressType(virtual_network=":".join(P + ["red"]))],
                  dst_addresses=[pb.AddressType(virtual_network=":".join(P + ["blue"]))])]))
for net in ("red", "blue"):
    cur = [o for o in a.list("virtual-network") if o.virtual_network.fq_name[-1] == net][0]
    cur.virtual_network.network_policy_refs.append(ref("network-policy", P + ["red-blue"]))
    a.update(virtual_network=cur.virtual_network)
a.wait_programmed()
t = tables()
for v in (vrf["red-a"], vrf["blue-a"]):
    assert [r[0] for r in t["routes"][v]] == ["10.1.0.3/32", "10.1.0.4/32", "10.2.0.3/32"], t["routes"]
red_vif = next(v for v in t["vifs"] if v["name"] == "red-a")
vn_set = [n for n in red_vif["egress"] if n.startswith("agent/vn/")]
assert vn_set == ["agent/vn/" + red.virtual_network.uuid], red_vif
rules = t["policies"][vn_set[0]]["rules"]
red_id, blue_id = red.virtual_network.virtual_network_network_id, blue.virtual_network.virtual_network_network_id
assert rules[0] == {"proto": None, "src": {}, "dst": {"vn": red_id}, "sport": None, "dport": None, "action": "pass"}
assert {"proto": 6, "src": {"vn": red_id}, "dst": {"vn": blue_id}, "sport": None, "dport": None, "action": "pass"} in rules
assert {"proto": 6, "src": {"vn": blue_id}, "dst": {"vn": red_id}, "sport": None, "dport": None, "action": "pass"} in rules
attrs = {x["id"]: x for x in vrctl(VRCTL, SOCKET, "attr")}
assert attrs[red_vif["attr"]]["vn"] == red_id

# --- a service VIP on both red interfaces: an ECMP composite ---------------------------
a.create(instance_ip=pb.InstanceIp(
    fq_name=["svc-vip"], instance_ip_address="10.1.0.100", service_instance_ip=True,
    virtual_network_ref=ref("virtual-network", P + ["red"]),
    virtual_machine_interface_refs=[ref("virtual-machine-interface", P + ["red-a"]),
                                    ref("virtual-machine-interface", P + ["red-b"])]))
a.wait_programmed()
t = tables()
vip = [r for r in t["routes"][vrf["red-a"]] if r[0] == "10.1.0.100/32"]
assert len(vip) == 1
comp = [n for n in vrctl(VRCTL, SOCKET, "nh") if n["id"] == vip[0][1]][0]
assert comp["type"] == "composite" and len(comp["members"]) == 2, comp
vif_of_nh = {n["id"]: n.get("vif") for n in vrctl(VRCTL, SOCKET, "nh")}
assert sorted(vif_of_nh[m["nh"]] for m in comp["members"]) == sorted(
    v["id"] for v in t["vifs"] if v["name"] in ("red-a", "red-b"))

# --- invalid requests: the right code, a message naming the field, nothing changed -----
before = tables()
n_vns = len(a.list("virtual-network"))
C = grpc.StatusCode
expect_error(C.INVALID_ARGUMENT, a.create, virtual_network=pb.VirtualNetwork(
    fq_name=P + ["bad"], network_ipam_refs=[pb.IpamRef(ipam=ipam, subnets=[
        pb.Subnet(prefix="10.9.0.0/16"), pb.Subnet(prefix="10.9.4.0/24")])]), contains="overlaps")
expect_error(C.INVALID_ARGUMENT, a.create, virtual_network=pb.VirtualNetwork(
    fq_name=P + ["bad"], network_ipam_refs=[pb.IpamRef(ipam=ipam, subnets=[
        pb.Subnet(prefix="10.9.0.0/33")])]), contains="subnets[0].prefix")
expect_error(C.INVALID_ARGUMENT, a.create, virtual_network=pb.VirtualNetwork(
    fq_name=P + ["bad"], network_ipam_refs=[pb.IpamRef(ipam=ipam, subnets=[
        pb.Subnet(prefix="10.9.0.0/24", gateway="10.8.0.1")])]), contains="gateway")
expect_error(C.INVALID_ARGUMENT, a.create, virtual_network=pb.VirtualNetwork(
    fq_name=P + ["bad"], vxlan_network_identifier=1 << 24), contains="vxlan_network_identifier")
expect_error(C.ALREADY_EXISTS, a.create, virtual_network=pb.VirtualNetwork(
    fq_name=P + ["bad"], vxlan_network_identifier=5002), contains="vxlan_network_identifier")
expect_error(C.ALREADY_EXISTS, a.create, virtual_network=pb.VirtualNetwork(fq_name=P + ["red"]),
             contains="fq_name")
expect_error(C.NOT_FOUND, a.create, virtual_machine_interface=pb.VirtualMachineInterface(
    fq_name=P + ["orphan"], virtual_network_ref=ref("virtual-network", P + ["nope"])),
    contains="virtual_network_ref")
expect_error(C.NOT_FOUND, a.create, virtual_network=pb.VirtualNetwork(
    fq_name=[D, "nowhere", "vn"]), contains="parent project")
expect_error(C.INVALID_ARGUMENT, a.create, virtual_machine_interface=pb.VirtualMachineInterface(
    fq_name=P + ["nonet"]), contains="virtual_network_ref")
expect_error(C.INVALID_ARGUMENT, a.create, virtual_machine_interface=pb.VirtualMachineInterface(
    fq_name=P + ["badmac"], mac_address="02:00:zz:00:00:01",
    virtual_network_ref=ref("virtual-network", P + ["red"])), contains="mac_address")
expect_error(C.INVALID_ARGUMENT, a.create, security_group=pb.SecurityGroup(
    fq_name=P + ["badsg"], security_group_entries=[pb.PolicyRule(
        protocol="tcp", dst_addresses=[pb.AddressType(security_group="local")],
        dst_ports=[pb.PortRange(start_port=1, end_port=70000)])]), contains="dst_ports[0]")
expect_error(C.INVALID_ARGUMENT, a.create, network_policy=pb.NetworkPolicy(
    fq_name=P + ["badnp"], network_policy_entries=[pb.PolicyRule(protocol="tcpx", action="pass")]),
    contains="protocol")
expect_error(C.ALREADY_EXISTS, a.create, instance_ip=pb.InstanceIp(
    fq_name=["dup-ip"], instance_ip_address="10.1.0.3",
    virtual_network_ref=ref("virtual-network", P + ["red"])), contains="red-a-ip")
expect_error(C.INVALID_ARGUMENT, a.create, instance_ip=pb.InstanceIp(
    fq_name=["out-ip"], instance_ip_address="10.7.0.3",
    virtual_network_ref=ref("virtual-network", P + ["red"])), contains="no subnet")
expect_error(C.INVALID_ARGUMENT, a.create, loadbalancer_listener=pb.LoadbalancerListener(
    fq_name=P + ["l"], protocol="TCP", protocol_port=0), contains="protocol_port")
expect_error(C.INVALID_ARGUMENT, a.create, global_vrouter_config=pb.GlobalVrouterConfig(
    fq_name=["default-global-system-config", "default-global-vrouter-config"],
    encapsulation_priorities=["VXLAN", "IPIP"]), contains="encapsulation_priorities[1]")
expect_error(C.FAILED_PRECONDITION, a.delete, "virtual-network", P + ["red"], contains="referred to")
expect_error(C.NOT_FOUND, a.delete, "virtual-network", P + ["nope"])
expect_error(C.INVALID_ARGUMENT, a.update, virtual_network=pb.VirtualNetwork(
    uuid=red.virtual_network.uuid, fq_name=P + ["renamed"]), contains="fq_name")
# A batch is all or nothing: a good VN followed by a bad interface creates neither.
expect_error(C.NOT_FOUND, a.config.Batch, pb.BatchRequest(changes=[
    pb.Change(create=pb.Object(virtual_network=pb.VirtualNetwork(fq_name=P + ["green"]))),
    pb.Change(create=pb.Object(virtual_machine_interface=pb.VirtualMachineInterface(
        fq_name=P + ["g1"], virtual_network_ref=ref("virtual-network", P + ["greenx"])))),
]), contains="change 1")
expect_error(C.NOT_FOUND, a.agent.AddPort, pb.Port(vmi_uuid="not-a-vmi"), contains="vmi_uuid")
assert len(a.list("virtual-network")) == n_vns
assert not [o for o in a.list("virtual-machine-interface") if o.virtual_machine_interface.fq_name[-1] in ("g1", "orphan")]
a.wait_programmed()
assert tables() == before, "refused requests changed the vrouter"

# A good batch applies everything.
r = a.config.Batch(pb.BatchRequest(changes=[
    pb.Change(create=pb.Object(virtual_network=pb.VirtualNetwork(fq_name=P + ["green"]))),
    pb.Change(create=pb.Object(network_policy=pb.NetworkPolicy(fq_name=P + ["none"]))),
]))
assert len(r.objects) == 2 and r.objects[0].virtual_network.uuid

# The watcher saw red, blue and green (and the two updates).
import time
deadline = time.time() + 5
while time.time() < deadline and not any(e.object.virtual_network.fq_name[-1:] == ["green"] for e in events):
    time.sleep(0.05)
names = [(e.kind, e.object.virtual_network.fq_name[-1]) for e in events]
assert (0, "red") in names and (0, "blue") in names and (0, "green") in names, names
assert (1, "red") in names, names
watch.cancel()

# --- removal: the port goes, its routes and vif with it ---------------------------------
a.agent.DeletePort(pb.PortRef(vmi_uuid=ports["red-b"][0].uuid), timeout=30)
a.wait_programmed()
t = tables()
assert [v["name"] for v in t["vifs"]] == ["red-a", "blue-a"], t["vifs"]
assert "10.1.0.4/32" not in [r[0] for r in t["routes"][vrf["red-a"]]]
# The VIP now has one path: a plain route to red-a's nexthop.
vip = [r for r in t["routes"][vrf["red-a"]] if r[0] == "10.1.0.100/32"][0]
assert [n for n in vrctl(VRCTL, SOCKET, "nh") if n["id"] == vip[1]][0]["type"] == "encap"
print("agent API scenario: ok")
