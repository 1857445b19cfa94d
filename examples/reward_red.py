#!/usr/bin/env python3
"""An external reward for `unigrpo train --reward exec:...` (protocol: docs/rewards.md).

Reads one JSON object per sample on stdin, writes one number per line on stdout: here, how red
the image is (mean of R - (G + B) / 2 over pixels, in [-1, 1]). Needs only the standard library:
PNGs are decoded with zlib.

    unigrpo train --model models/tiny-shapes --prompts models/tiny-shapes/prompts/train.txt \\
        --reward "exec:python3 examples/reward_red.py" --steps 20 --out runs/red
"""
import json
import struct
import sys
import zlib


def read_png_rgb(path):
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, width, height = 8, b"", 0, 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and colour == 2, "expects 8-bit RGB"
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * 3
    rows, prev = [], bytearray(stride)
    for y in range(height):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for x in range(stride):
            a = line[x - 3] if x >= 3 else 0
            b = prev[x]
            c = prev[x - 3] if x >= 3 else 0
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
        rows.append(line)
        prev = line
    return width, height, b"".join(rows)


def redness(path):
    w, h, px = read_png_rgb(path)
    total = sum(px[i] - (px[i + 1] + px[i + 2]) / 2 for i in range(0, len(px), 3))
    return total / (w * h * 255)


for line in sys.stdin:
    if line.strip():
        sample = json.loads(line)
        print(f"{redness(sample['image']):.6f}", flush=True)
