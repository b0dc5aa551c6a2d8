"""Train, evaluate and predict from a memory-mapped file larger than this process may hold:
a subprocess of tests/test_streaming.py. Usage: capped.py PATH ROWS FEATURES BACKEND HEADROOM_MB

The data segment is capped (RLIMIT_DATA) at what the process uses after a first fit plus
HEADROOM_MB, less than the file's size: reading the file into memory must then fail, and
streaming it through fit, evaluate and predict must not.
"""

from __future__ import annotations

import resource
import sys

import numpy as np

import polynn as pn


def data_segment_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmData:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmData in /proc/self/status")


def main() -> None:
    path, rows, features, backend, headroom = sys.argv[1:]
    rows, features, headroom = int(rows), int(features), int(headroom) << 20
    data = np.memmap(path, dtype=np.float32, mode="r", shape=(rows, features + 1))

    def batches(size: int = 8192):
        for start in range(0, rows, size):
            chunk = data[start : start + size]
            yield chunk[:, :features], chunk[:, features:]

    net = pn.Sequential(pn.Dense(features, 1), backend=backend, seed=0)
    net.fit(lambda: batches(), epochs=1, optimizer=pn.SGD(lr=0.05), verbose=0)  # warm up
    assert headroom < data.nbytes
    cap = data_segment_bytes() + headroom
    resource.setrlimit(resource.RLIMIT_DATA, (cap, cap))
    try:
        np.array(data)
    except MemoryError:
        pass
    else:
        raise AssertionError("the cap did not stop reading the whole file into memory")
    hist = net.fit(lambda: batches(), epochs=2, verbose=0)
    scores = net.evaluate(batches())
    out = net.predict(x for x, _ in batches())
    print(hist["loss"][-1], scores["loss"], out.shape[0])


if __name__ == "__main__":
    main()
