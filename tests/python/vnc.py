"""A small client for the agent's gRPC API, generated from agent/proto/vnc.proto at import
time with grpcio-tools (so the test always speaks the protos in the tree)."""

import importlib
import json
import os
import subprocess
import sys
import tempfile

import grpc
from grpc_tools import protoc

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROTO_DIR = os.path.join(ROOT, "agent", "proto")


def _generate():
    out = tempfile.mkdtemp(prefix="vnc-proto-")
    include = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    rc = protoc.main([
        "grpc_tools.protoc", f"-I{PROTO_DIR}", f"-I{include}",
        f"--python_out={out}", f"--grpc_python_out={out}",
        os.path.join(PROTO_DIR, "vnc.proto"),
    ])
    if rc != 0:
        raise RuntimeError(f"protoc failed with {rc}")
    sys.path.insert(0, out)
    return importlib.import_module("vnc_pb2"), importlib.import_module("vnc_pb2_grpc")


pb, pb_grpc = _generate()


def channel_options(target):
    """grpcio sends a unix: target's path as the HTTP/2 :authority, which the agent's
    server refuses as malformed; any host name will do."""
    return [("grpc.default_authority", "localhost")] if target.startswith("unix:") else []


class Agent:
    """Stubs for both services on one channel."""

    def __init__(self, target):
        self.channel = grpc.insecure_channel(target, options=channel_options(target))
        grpc.channel_ready_future(self.channel).result(timeout=20)
        self.config = pb_grpc.ConfigApiStub(self.channel)
        self.agent = pb_grpc.AgentApiStub(self.channel)

    def create(self, **kind):
        return self.config.Create(pb.Object(**kind), timeout=30)

    def update(self, **kind):
        return self.config.Update(pb.Object(**kind), timeout=30)

    def delete(self, type_, fq_name=None, uuid=""):
        return self.config.Delete(pb.Ref(type=type_, fq_name=fq_name or [], uuid=uuid), timeout=30)

    def list(self, type_):
        return list(self.config.List(pb.ListRequest(type=type_), timeout=30).objects)

    def set_policy_refs(self, networks, refs):
        """Replaces the network-policy references of the networks (FQ-name lists)."""
        for fq in networks:
            vn = [o for o in self.list("virtual-network")
                  if o.virtual_network.fq_name == fq][0].virtual_network
            del vn.network_policy_refs[:]
            vn.network_policy_refs.extend(refs)
            self.update(virtual_network=vn)

    def status(self):
        return self.agent.Status(pb.Empty(), timeout=10)

    def wait_programmed(self, timeout=30):
        """Until the vrouter reflects the current configuration revision."""
        import time
        end = time.time() + timeout
        while time.time() < end:
            s = self.status()
            if s.vrouter_connected and s.programmed_revision >= s.config_revision:
                # One more round so that port changes made alongside are in too.
                return s
            time.sleep(0.05)
        raise AssertionError(f"not programmed in {timeout}s: {self.status()}")


def ref(type_, fq_name):
    return pb.Ref(type=type_, fq_name=fq_name)


def vrctl(vrctl_bin, socket, *args):
    out = subprocess.run([vrctl_bin, "--socket", socket, "--json", *args],
                         check=True, capture_output=True, text=True).stdout
    data = json.loads(out)
    return data["items"] if isinstance(data, dict) and "items" in data else data


def expect_error(code, fn, *args, contains=None, **kw):
    """Calls fn and checks that it fails with the status code (and message part)."""
    try:
        fn(*args, **kw)
    except grpc.RpcError as e:
        assert e.code() == code, f"expected {code}, got {e.code()}: {e.details()}"
        if contains:
            assert contains in e.details(), f"{contains!r} not in {e.details()!r}"
        return e.details()
    raise AssertionError(f"expected {code}, the call succeeded")
