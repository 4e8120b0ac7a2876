"""Hostile route values written straight into etcd (through its JSON gateway), as anyone
who can write to etcd could: for the route-validation test.

usage: etcd_inject.py URL NODE_IP
    takes one route NODE_IP published, and writes next to it: a copy under NODE_IP's key
    that claims another node, bytes that are not JSON, a default route, a prefix outside
    the network's subnets, a multicast MAC, a label out of range; prints how many
"""

import base64
import json
import sys
import urllib.request

URL, NODE = sys.argv[1:]
PREFIX = "/vrouter/routes/"


def call(path, body):
    req = urllib.request.Request(URL + path, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def b64(s):
    return base64.b64encode(s if isinstance(s, bytes) else s.encode()).decode()


def put(key, value):
    call("/v3/kv/put", {"key": b64(key), "value": b64(value)})


start = PREFIX + NODE + "/"
end = start[:-1] + chr(ord(start[-1]) + 1)
kvs = call("/v3/kv/range", {"key": b64(start), "range_end": b64(end)}).get("kvs", [])
route = json.loads(base64.b64decode(kvs[0]["value"]))
vn = route["vn"]


def variant(**kw):
    r = dict(route)
    r.update(kw)
    return r


def key(r):
    return f"{PREFIX}{r['node_ip']}/{r['vn']}/{r['prefix']}"


bad = [
    # Under NODE's key, speaking for another node.
    (f"{PREFIX}{NODE}/{vn}/10.60.0.77/32", json.dumps(variant(node_ip="192.0.2.1", prefix="10.60.0.77/32"))),
    (f"{PREFIX}{NODE}/{vn}/10.60.0.78/32", "not json at all"),
]
for r in [variant(prefix="0.0.0.0/0"), variant(prefix="10.60.0.79/32", node_mac="01:00:5e:00:00:01"),
          variant(prefix="10.60.0.80/32", label=1 << 21)]:
    bad.append((key(r), json.dumps(r)))
# Well-formed, but outside the network's subnets: left out by the reconcile.
outside = variant(prefix="10.99.0.1/32")
bad.append((key(outside), json.dumps(outside)))
for k, v in bad:
    put(k, v)
print(len(bad))
