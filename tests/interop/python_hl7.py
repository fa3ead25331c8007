"""Interop check, by hand, not in CI: python-hl7 (client, `mllp_send`, parser, asyncio MLLP
server) and hl7apy against the `mllp` binary, for LF-separated messages, batches and the
fallback AR.

Run with:
    python3 -m venv /tmp/hl7venv && /tmp/hl7venv/bin/pip install hl7==0.4.5 hl7apy
    cargo build && /tmp/hl7venv/bin/python tests/interop/python_hl7.py
(`MLLP` overrides the binary's path, `MLLP_SEND` python-hl7's `mllp_send`.)
"""
import asyncio, os, subprocess, sys, tempfile
import hl7
from hl7.client import MLLPClient
from hl7.mllp import start_hl7_server

MLLP = os.environ.get("MLLP", "target/debug/mllp")
MLLP_SEND = os.environ.get("MLLP_SEND", os.path.join(os.path.dirname(sys.executable), "mllp_send"))
TMP = tempfile.mkdtemp()

def serve(*args):
    p = subprocess.Popen([MLLP, "serve", "--bind", "127.0.0.1:0", "--no-store", *args],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = p.stdout.readline()
    port = int(line.split("listening on ")[1].split()[0].rsplit(":", 1)[1])
    return p, port

def raw_ack(reply):
    return reply.strip(b"\x0b\x1c\r").decode()

msg_lf = "MSH|^~\\&|PYHL7|LAB|MLLP|HOSP|20260101||ORU^R01^ORU_R01|PY-LF-1|P|2.5\nPID|1||MRN1\nOBX|1|TX|X||text\n"
msg_cr = msg_lf.replace("\n", "\r").replace("PY-LF-1", "PY-CR-1")
batch = ("BHS|^~\\&|PYHL7|LAB|MLLP|HOSP|20260101||||PYB1\r"
         + msg_cr.replace("PY-CR-1", "PYB1-1") + msg_cr.replace("PY-CR-1", "PYB1-2") + "BTS|2\r")

results = []
def check(name, ok, detail=""):
    results.append((name, ok))
    print(("PASS " if ok else "FAIL ") + name + ("" if ok else "  " + detail))

# A. python-hl7 client -> mllp serve
p, port = serve()
with MLLPClient("127.0.0.1", port) as c:
    ack = raw_ack(c.send_message(msg_cr))
    check("python-hl7 client CR message -> AA", "MSA|AA|PY-CR-1" in ack, ack)
    ack = raw_ack(c.send_message(msg_lf))
    check("strict serve refuses LF message with AR", "MSA|AR|" in ack, ack)
    reply = raw_ack(c.send_message(batch))
    parsed = hl7.parse_batch(reply.replace("\r", "\r"))
    check("batch reply parses with hl7.parse_batch", len(parsed) == 2 and str(parsed[0].segment("MSA")[2]) == "PYB1-1", reply)
    check("batch reply BHS-12 = BHS-11", str(parsed.header[12]) == "PYB1" if parsed.header else False, reply)
    ack = raw_ack(c.send_message("not hl7 at all"))
    m = hl7.parse(ack)
    check("fallback AR parses in python-hl7, MSH-9.3 ACK", str(m.segment("MSH")[9][0][2]) == "ACK", ack)
    try:
        from hl7apy.parser import parse_message
        parse_message(ack.replace("\r", "\r"), find_groups=False)
        check("fallback AR parses in hl7apy", True)
    except Exception as e:
        check("fallback AR parses in hl7apy", False, repr(e))
p.terminate(); p.wait()

p, port = serve("--lenient-line-endings")
with MLLPClient("127.0.0.1", port) as c:
    ack = raw_ack(c.send_message(msg_lf))
    check("--lenient-line-endings takes LF message", "MSA|AA|PY-LF-1" in ack, ack)
    reply = raw_ack(c.send_message(batch.replace("\r", "\n")))
    check("--lenient-line-endings takes LF batch", reply.startswith("BHS") and reply.count("MSA|AA") == 2, reply)
p.terminate(); p.wait()

# python-hl7's mllp_send (loose mode converts LF files)
p, port = serve()
with open(os.path.join(TMP, "py_lf.hl7"), "w") as f:
    f.write(msg_lf + msg_lf.replace("PY-LF-1", "PY-LF-2"))
out = subprocess.run([MLLP_SEND, "--loose", "--file", os.path.join(TMP, "py_lf.hl7"),
                      "--port", str(port), "127.0.0.1"], capture_output=True, text=True)
check("mllp_send --loose to mllp serve", out.stdout.count("MSA|AA|") == 2, out.stdout + out.stderr)
p.terminate(); p.wait()

# B. mllp send -> python-hl7 asyncio server
received = []
async def handle(hl7_reader, hl7_writer):
    try:
        while not hl7_writer.is_closing():
            message = await hl7_reader.readmessage()
            received.append(str(message))
            hl7_writer.writemessage(message.create_ack())
            await hl7_writer.drain()
    except Exception:
        pass
    finally:
        hl7_writer.close()

async def main():
    server = await start_hl7_server(handle, host="127.0.0.1", port=0)
    port = server.sockets[0].getsockname()[1]
    with open(os.path.join(TMP, "one.hl7"), "w") as f:
        f.write(msg_lf.replace("PY-LF-1", "RS-1") + msg_lf.replace("PY-LF-1", "RS-2"))
    proc = await asyncio.create_subprocess_exec(MLLP, "send", "--to", f"127.0.0.1:{port}", os.path.join(TMP, "one.hl7"),
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    check("mllp send -> python-hl7 server", proc.returncode == 0 and b"RS-2  AA" in out, (out + err).decode())
    with open(os.path.join(TMP, "batch.hl7"), "w") as f:
        f.write(batch.replace("\r", "\n"))
    proc = await asyncio.create_subprocess_exec(MLLP, "send", "--batch", "--timeout", "3s", "--retries", "0",
                                                "--to", f"127.0.0.1:{port}", os.path.join(TMP, "batch.hl7"),
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    # python-hl7's server reads a batch as one message and acknowledges its first MSH-10 only:
    # the first message is AA, the second has no ACK (status 3).
    check("mllp send --batch -> python-hl7 server: only the first message acknowledged",
          proc.returncode == 3 and b"#1  PYB1-1  AA" in out and b"#2  PYB1-2  FAILED" in out,
          (out + err).decode())
    server.close()

asyncio.run(main())
print(f"{sum(ok for _, ok in results)} passed, {sum(not ok for _, ok in results)} failed")
sys.exit(0 if all(ok for _, ok in results) else 1)
