#!/usr/bin/python3
"""Test double of CloudStack's API (tests/cloudstack.rs), on 127.0.0.1 only.

    cloudstack_api.py STATE_DIR

STATE_DIR/secret holds the API secret key (never on a command line), STATE_DIR/config.json
{"api_key", "fail_declares", "hosts": [{"id", "name", "ipaddress"}]}. The server writes its port
to STATE_DIR/port and one JSON line per request to STATE_DIR/requests.jsonl.

Signatures are verified as CloudStack's ApiServer.verifyRequest does: the decoded parameters but
`signature`, sorted by name, each value encoded like java.net.URLEncoder (letters, digits and
".-*_" kept, space as "+", the rest %XX) with "+" then replaced by "%20", joined with "&",
lower-cased, HMAC-SHA1 with the secret key, base64; a mismatch answers CloudStack's 401.
declareHostAsDegraded answers a job id; the first `fail_declares` jobs fail the way CloudStack's
ResourceManagerImpl does for a host still Up (InvalidParameterValueException, errorcode 431),
later ones succeed. Stops by itself after 10 minutes.
"""

import base64
import hashlib
import hmac
import json
import os
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

STATE = sys.argv[1]
SECRET = open(os.path.join(STATE, "secret")).read().strip()
CONFIG = json.load(open(os.path.join(STATE, "config.json")))
LOCK = threading.Lock()
JOBS = {}
DECLARES = [0]
DEGRADED = set()

SAFE = set(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-*_")


def java_urlencoder(value):
    out = []
    for b in value.encode("utf-8"):
        if b in SAFE:
            out.append(chr(b))
        elif b == 0x20:
            out.append("+")
        else:
            out.append("%%%02X" % b)
    return "".join(out)


def expected_signature(params):
    names = sorted(k for k in params if k.lower() != "signature")
    unsigned = "&".join(
        "%s=%s" % (k, java_urlencoder(params[k]).replace("+", "%20")) for k in names
    )
    mac = hmac.new(SECRET.encode(), unsigned.lower().encode(), hashlib.sha1)
    return base64.b64encode(mac.digest()).decode()


def record(entry):
    with LOCK:
        with open(os.path.join(STATE, "requests.jsonl"), "a") as f:
            f.write(json.dumps(entry) + "\n")


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def answer(self, code, name, body):
        data = json.dumps({name: body}).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        params = {k: v[0] for k, v in urllib.parse.parse_qs(url.query, keep_blank_values=True).items()}
        command = params.get("command", "")
        name = command.lower() + "response"
        signature_ok = hmac.compare_digest(params.get("signature", ""), expected_signature(params))
        key_ok = params.get("apiKey") == CONFIG["api_key"]
        record({"command": command, "id": params.get("id"), "signature_ok": signature_ok and key_ok})
        if not (signature_ok and key_ok):
            return self.answer(401, "errorresponse", {
                "uuidList": [], "errorcode": 401,
                "errortext": "unable to verify user credentials and/or request signature"})
        if command == "listHosts":
            hosts = [h for h in CONFIG["hosts"] if params.get("type", "Routing") == "Routing"]
            page = int(params.get("page", "1"))
            if page > 1:
                hosts = []
            return self.answer(200, name, {"count": len(hosts), "host": hosts})
        if command in ("declareHostAsDegraded", "cancelHostAsDegraded"):
            host = next((h for h in CONFIG["hosts"] if h["id"] == params.get("id")), None)
            with LOCK:
                job = "job-%d" % (len(JOBS) + 1)
                if host is None:
                    JOBS[job] = (2, {"errorcode": 431, "errortext": "Unable to execute API command due to invalid value. Invalid parameter id value=%s due to incorrect long value format, or entity does not exist or due to incorrect parameter annotation for the field in api cmd class." % params.get("id")})
                elif command == "declareHostAsDegraded":
                    DECLARES[0] += 1
                    if DECLARES[0] <= CONFIG["fail_declares"]:
                        JOBS[job] = (2, {"errorcode": 431, "errortext": "Cannot perform declare host [id=%s, name=%s] as 'Degraded' when host is in Up status" % (host["id"], host["name"])})
                    else:
                        DEGRADED.add(host["id"])
                        JOBS[job] = (1, {"host": dict(host, resourcestate="Degraded")})
                else:
                    if host["id"] in DEGRADED:
                        DEGRADED.discard(host["id"])
                        JOBS[job] = (1, {"host": dict(host, resourcestate="Enabled")})
                    else:
                        JOBS[job] = (2, {"errorcode": 530, "errortext": "Cannot perform cancelHostAsDegraded on host [id=%s, name=%s] when host is in Enabled state" % (host["id"], host["name"])})
            return self.answer(200, name, {"jobid": job})
        if command == "listVirtualMachines":
            vms = CONFIG.get("vms", {}).get(params.get("hostid", ""), [])
            return self.answer(200, name, {"count": len(vms), "virtualmachine": vms})
        if command == "queryAsyncJobResult":
            with LOCK:
                status, result = JOBS.get(params.get("jobid"), (2, {"errorcode": 431, "errortext": "no such job"}))
            return self.answer(200, name, {
                "jobid": params.get("jobid"), "jobstatus": status,
                "jobresultcode": 0 if status == 1 else 530, "jobresult": result})
        return self.answer(432, "errorresponse", {"errorcode": 432, "errortext": "The given command does not exist or it is not available for user"})


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
with open(os.path.join(STATE, "port.tmp"), "w") as f:
    f.write(str(server.server_address[1]))
os.rename(os.path.join(STATE, "port.tmp"), os.path.join(STATE, "port"))
threading.Timer(600, server.shutdown).start()
server.serve_forever()
