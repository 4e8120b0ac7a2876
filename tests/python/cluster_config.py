"""Two agents over one cluster configuration in etcd (`--config-store etcd`): every
object is written once, through either agent, and both follow it.

usage: cluster_config.py TARGET_A TARGET_B build      objects through A; pod a on A, pod b on B
       cluster_config.py TARGET_A TARGET_B race N     2 x N addresses allocated at once through
                                                       both agents; one name created through both
       cluster_config.py TARGET_A TARGET_B batch N    a batch of 2 N changes (over one etcd
                                                       transaction) through B, then one that fails
                                                       at its last change
       cluster_config.py TARGET_A TARGET_B count      prints the instance-ips A and B hold
       cluster_config.py TARGET_A TARGET_B interfaces prints the interfaces A and B hold, once equal
       cluster_config.py TARGET_A TARGET_B after TAG  one more pod-less address through A, seen by B
       cluster_config.py TARGET_A TARGET_B unavailable
"""

import sys
import threading
import time

import grpc

from vnc import Agent, expect_error, pb, ref

A, B, PHASE = sys.argv[1:4]
ARGS = sys.argv[4:]
P = ["default-domain", "cluster"]
net = ref("virtual-network", P + ["net"])


def agents():
    return Agent(A), Agent(B)


def until(what, f, timeout=30):
    end = time.time() + timeout
    while time.time() < end:
        if f():
            return
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout}s: {what}")


def ips(a):
    return {o.instance_ip.uuid: o.instance_ip.instance_ip_address
            for o in a.list("instance-ip")}


def same_everywhere(a, b):
    """Both agents hold the same instance-ips (uuid -> address); returns them."""
    until("both agents hold the same addresses", lambda: ips(a) == ips(b))
    return ips(a)


if PHASE == "build":
    a, b = agents()
    a.create(project=pb.Project(fq_name=P))
    a.create(network_ipam=pb.NetworkIpam(fq_name=P + ["ipam"]))
    a.create(virtual_network=pb.VirtualNetwork(
        fq_name=P + ["net"], network_ipam_refs=[pb.IpamRef(
            ipam=ref("network-ipam", P + ["ipam"]), subnets=[pb.Subnet(prefix="10.60.0.0/16")])]))
    vmis = {}
    for pod in ("a", "b"):
        vmis[pod] = a.create(virtual_machine_interface=pb.VirtualMachineInterface(
            fq_name=P + [f"pod-{pod}"], virtual_network_ref=net)).virtual_machine_interface.uuid
        a.create(instance_ip=pb.InstanceIp(
            fq_name=[f"pod-{pod}-ip"], virtual_network_ref=net,
            virtual_machine_interface_refs=[ref("virtual-machine-interface", P + [f"pod-{pod}"])]))
    # Written once, through A: B learns the interfaces from etcd, and plugs its own.
    until("B sees both interfaces",
          lambda: {o.virtual_machine_interface.uuid for o in b.list("virtual-machine-interface")}
          == set(vmis.values()))
    a.agent.AddPort(pb.Port(vmi_uuid=vmis["a"], name="pod-a"), timeout=30)
    b.agent.AddPort(pb.Port(vmi_uuid=vmis["b"], name="pod-b"), timeout=30)
    for x in (a, b):
        x.wait_programmed()
    got = same_everywhere(a, b)
    assert len(set(got.values())) == 2, got
    print(" ".join(sorted(got.values())))

elif PHASE == "race":
    n = int(ARGS[0])
    a, b = agents()
    before = ips(a)
    made = {0: [], 1: []}
    errors = []
    go = threading.Barrier(2)

    def writer(i, x):
        try:
            go.wait()
            for k in range(n):
                o = x.create(instance_ip=pb.InstanceIp(
                    fq_name=[f"race-{i}-{k}"], virtual_network_ref=net))
                made[i].append((o.instance_ip.uuid, o.instance_ip.instance_ip_address))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))

    ts = [threading.Thread(target=writer, args=(i, x)) for i, x in enumerate((a, b))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors, errors
    given = [addr for i in (0, 1) for _, addr in made[i]]
    assert len(given) == 2 * n, len(given)
    assert len(set(given)) == 2 * n, f"an address was given twice: {sorted(given)}"
    got = same_everywhere(a, b)
    assert len(got) == len(before) + 2 * n, (len(got), len(before))
    assert len(set(got.values())) == len(got), "two instance-ips hold one address"
    for i in (0, 1):
        for u, addr in made[i]:
            assert got[u] == addr, (u, addr, got.get(u))

    # One name through both agents at once: exactly one wins, the other is told.
    outcomes = []
    go2 = threading.Barrier(2)

    def claim(x):
        go2.wait()
        try:
            x.create(instance_ip=pb.InstanceIp(fq_name=["contested"], virtual_network_ref=net))
            outcomes.append("ok")
        except grpc.RpcError as e:
            outcomes.append(e.code())

    ts = [threading.Thread(target=claim, args=(x,)) for x in (a, b)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert sorted(map(str, outcomes)) == sorted(["ok", str(grpc.StatusCode.ALREADY_EXISTS)]), outcomes
    until("both hold the contested name once",
          lambda: all(sum(o.instance_ip.fq_name == ["contested"] for o in x.list("instance-ip")) == 1
                      for x in (a, b)))
    print(2 * n)

elif PHASE == "batch":
    n = int(ARGS[0])
    a, b = agents()
    before = len(ips(a))
    changes = []
    for k in range(n):
        changes.append(pb.Change(create=pb.Object(virtual_machine_interface=pb.VirtualMachineInterface(
            fq_name=P + [f"bulk-{k}"], virtual_network_ref=net))))
        changes.append(pb.Change(create=pb.Object(instance_ip=pb.InstanceIp(
            fq_name=[f"bulk-{k}-ip"], virtual_network_ref=net,
            virtual_machine_interface_refs=[ref("virtual-machine-interface", P + [f"bulk-{k}"])]))))
    r = b.config.Batch(pb.BatchRequest(changes=changes), timeout=120)
    assert len(r.objects) == 2 * n
    got = same_everywhere(a, b)
    assert len(got) == before + n, (len(got), before, n)
    assert len(set(got.values())) == len(got)
    # All or nothing: the same size again, its last change refers to nothing.
    bad = []
    for k in range(n):
        bad.append(pb.Change(create=pb.Object(virtual_machine_interface=pb.VirtualMachineInterface(
            fq_name=P + [f"bulk2-{k}"], virtual_network_ref=net))))
    bad.append(pb.Change(create=pb.Object(instance_ip=pb.InstanceIp(
        fq_name=["bulk2-bad"], virtual_network_ref=ref("virtual-network", P + ["nowhere"])))))
    expect_error(grpc.StatusCode.NOT_FOUND, b.config.Batch, pb.BatchRequest(changes=bad),
                 timeout=120, contains=f"change {n}")
    for x in (a, b):
        names = {o.virtual_machine_interface.fq_name[-1] for o in x.list("virtual-machine-interface")}
        assert not any(s.startswith("bulk2-") for s in names), "part of a refused batch landed"
    print(len(got))

elif PHASE == "count":
    a, b = agents()
    print(len(ips(a)), len(ips(b)))

elif PHASE == "interfaces":
    a, b = agents()

    def vmis(x):
        return sorted(o.virtual_machine_interface.uuid for o in x.list("virtual-machine-interface"))
    until("both agents hold the same interfaces", lambda: vmis(a) == vmis(b))
    print(len(vmis(a)), len(vmis(b)))

elif PHASE == "after":
    a, b = agents()
    o = a.create(instance_ip=pb.InstanceIp(fq_name=[f"after-{ARGS[0]}"], virtual_network_ref=net))
    u = o.instance_ip.uuid
    until("B sees the new address", lambda: u in ips(b))
    same_everywhere(a, b)
    print(o.instance_ip.instance_ip_address)

elif PHASE == "unavailable":
    a, b = agents()
    expect_error(grpc.StatusCode.UNAVAILABLE, a.create,
                 instance_ip=pb.InstanceIp(fq_name=["while-away"], virtual_network_ref=net))
    print(len(ips(a)), len(ips(b)))

else:
    raise SystemExit(f"unknown phase {PHASE}")
