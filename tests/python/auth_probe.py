"""Tries one call of each role on the agent and prints, for each, OK or the status code
the agent answered with (one JSON object). Run as whichever user the test picks.

usage: auth_probe.py TARGET [--tls CA CERT KEY]

TARGET is unix:PATH or HOST:PORT (with --tls: mutual TLS with that client certificate;
with --tls CA - -: TLS without a client certificate).
"""

import json
import os
import sys

import grpc

from vnc import channel_options, pb, pb_grpc

TARGET = sys.argv[1]
if len(sys.argv) > 2 and sys.argv[2] == "--tls":
    ca, cert, key = sys.argv[3:6]

    def read(p):
        return None if p == "-" else open(p, "rb").read()

    creds = grpc.ssl_channel_credentials(read(ca), read(key), read(cert))
    channel = grpc.secure_channel(TARGET, creds, options=[("grpc.ssl_target_name_override", "localhost")])
else:
    channel = grpc.insecure_channel(TARGET, options=channel_options(TARGET))

config = pb_grpc.ConfigApiStub(channel)
agent = pb_grpc.AgentApiStub(channel)


def attempt(fn):
    try:
        fn()
        return "OK"
    except grpc.RpcError as e:
        return e.code().name


out = {
    "read": attempt(lambda: config.List(pb.ListRequest(type="project"), timeout=10)),
    "status": attempt(lambda: agent.Status(pb.Empty(), timeout=10)),
    "config": attempt(lambda: config.Create(pb.Object(project=pb.Project(
        fq_name=["default-domain", os.environ.get("PROBE_NAME", "probe")])), timeout=10)),
    # A port for an interface that does not exist: a caller allowed to plug ports is told
    # NOT_FOUND (or INVALID_ARGUMENT), one who is not, PERMISSION_DENIED.
    "ports": attempt(lambda: agent.AddPort(pb.Port(
        vmi_uuid="00000000-0000-4000-8000-0000000000aa", device="packet:nonexistent0"), timeout=10)),
}
print(json.dumps(out))
