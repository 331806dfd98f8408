#!/usr/bin/python3
"""missive web's "Add a device" with the camera, in a real browser.

A new device runs `missive link --qr --png`; its QR code PNG becomes the video
of chromium's fake camera (a .y4m file made here); on alice's page, Devices,
"Scan with the camera": the page sends frames to missive web, which reads
them with libzbar; the page shows both fingerprints, and "Add this device"
links the new device. Then what missive web refuses: an image that is no
PNG, one over 8 MiB, a request not from the page, too many images at once.
Arguments: the missive and missived programs, where screenshots go; skipped
(77) where chromium, chromedriver or selenium is missing.
"""
import os, re, struct, subprocess, sys, time, zlib  # noqa: E401

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rig  # noqa: E402

rig.setup(sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else os.getcwd())
from rig import *  # noqa: E402,F401,F403


def png_gray(path):
    """the pixels of an 8-bit gray PNG (as qrimage.c writes): width, height, rows"""
    data = open(path, "rb").read()
    pos, idat = 8, b""
    w = h = 0
    while pos < len(data):
        n, t = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        if t == b"IHDR":
            w, h, depth, color = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and color == 0, "an 8-bit gray PNG"
        elif t == b"IDAT":
            idat += body
        pos += 12 + n
    raw, rows, prev = zlib.decompress(idat), [], bytearray(w)
    for y in range(h):
        f, line = raw[y * (w + 1)], bytearray(raw[y * (w + 1) + 1:(y + 1) * (w + 1)])
        for x in range(w):
            a = line[x - 1] if x else 0
            b, c = prev[x], prev[x - 1] if x else 0
            if f == 1:
                line[x] = (line[x] + a) & 255
            elif f == 2:
                line[x] = (line[x] + b) & 255
            elif f == 3:
                line[x] = (line[x] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line))
        prev = line
    return w, h, rows


def y4m_of(png, path, width=640, height=480, frames=10):
    """a video of the PNG in the middle of a white frame, scaled up to fill most of it"""
    w, h, rows = png_gray(png)
    k = max(1, min((width - 40) // w, (height - 40) // h))
    x0, y0 = (width - w * k) // 2, (height - h * k) // 2
    y = bytearray(b"\xff" * (width * height))
    for r in range(h * k):
        src = rows[r // k]
        line = bytes(src[i // k] for i in range(w * k))
        start = (y0 + r) * width + x0
        y[start:start + w * k] = line
    chroma = b"\x80" * ((width // 2) * (height // 2) * 2)
    with open(path, "wb") as f:
        f.write(b"YUV4MPEG2 W%d H%d F5:1 Ip A1:1 C420jpeg\n" % (width, height))
        for _ in range(frames):
            f.write(b"FRAME\n" + bytes(y) + chroma)


def main():
    port = start_missived()
    server = "127.0.0.1:" + port
    register("alice", server)
    url = start_web("alice")
    if not url:
        return
    # the new device shows its code and a PNG of it, and waits
    laptop = subprocess.Popen([rig.M, "--data-dir", "laptop", "link", "alice@example.org", "--server", server,
                               "--qr", "--png", "code.png"], env=env, stdout=subprocess.PIPE,
                              stderr=open("laptop.err", "wb"), text=True)
    procs.append(laptop)
    code = None
    for line in laptop.stdout:
        m = re.search(r"missive-link:1:[0-9a-f:]+", line)
        if m:
            code = m.group(0)
            break
    ok(code is not None and os.path.exists("code.png"), "the new device shows its code and its PNG")
    y4m_of("code.png", "code.y4m")
    a = browser("alice", extra=["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                                "--use-file-for-fake-video-capture=" + os.path.join(rig.work, "code.y4m")])
    a.get(url)
    ok(ready(a), "alice's page loads")
    a.find_element(By.ID, "btn-devices").click()
    until(lambda: a.find_element(By.ID, "add-camera")).click()
    fp = until(lambda: a.find_element(By.ID, "new-fp").text, 30)
    want = " ".join(re.findall(".{4}", code[-64:]))
    ok(fp == want, "the page shows the new device's fingerprint read from the camera: %r / %r" % (fp, want))
    mine = missive("alice", "fingerprint").stdout
    ok(a.find_element(By.ID, "this-fp").text in mine, "and this device's: %r" % a.find_element(By.ID, "this-fp").text)
    ok(js(a, "return document.getElementById('camera')?.hidden !== false"), "the camera is off once read")
    shot(a, "add-device")
    a.find_element(By.ID, "add-confirm").click()
    try:
        rc = laptop.wait(90)
    except subprocess.TimeoutExpired:
        rc = "still waiting"
    rest = laptop.stdout.read()
    ok(rc == 0 and "linked: this is device" in rest, "the new device is linked from the page (%s): %s %s" %
       (rc, rest, open("laptop.err").read()))

    # what missive web refuses, and says: requests made from the page, with its session
    def qr(body_js, header=True):
        return a.execute_async_script(
            "const done=arguments[arguments.length-1];"
            "const k=sessionStorage.getItem('missive-key');"
            "fetch('/qr?k='+k,{method:'POST',headers:" + ("{'X-Missive-Upload':'1'}" if header else "{}") +
            ",body:" + body_js + "}).then(r=>r.text().then(t=>done([r.status,t]))).catch(e=>done([0,''+e]))")
    a.set_script_timeout(60)
    time.sleep(1.2)
    st, body = qr("new Blob(['not a png at all'])")
    ok(st == 422 and "not a PNG" in body, "an image that is no PNG: %s %s" % (st, body))
    st, body = qr("new Blob(['x'])", header=False)
    ok(st == 403, "an image not from the page: %s %s" % (st, body))
    time.sleep(1.2)
    st, body = qr("new Blob([new Uint8Array(8*1024*1024+1)])")
    ok(st == 413 and "8 MiB" in body, "an image over 8 MiB: %s %s" % (st, body))
    codes = a.execute_async_script(
        "const done=arguments[arguments.length-1];const k=sessionStorage.getItem('missive-key');"
        "Promise.all([...Array(12)].map(()=>fetch('/qr?k='+k,{method:'POST',headers:{'X-Missive-Upload':'1'},"
        "body:new Blob(['x'])}).then(r=>r.status))).then(done).catch(e=>done([''+e]))")
    ok(429 in codes, "too many images at once are refused: %s" % codes)
    stop_webs()


if __name__ == "__main__":
    rig.run(main)
