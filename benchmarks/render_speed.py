"""How fast the mini world renders (images/s on one CPU core at the training resolution)."""
import time

import torch

from clipnotes import world as W


def main(n: int = 8192, batch: int = 128) -> float:
    torch.set_num_threads(1)
    f = W.World(0).factors(W.Split("pretrain", n))
    W.render(f.subset(slice(0, batch)))                      # warm up
    t0 = time.perf_counter()
    for s in range(0, n, batch):
        W.render(f.subset(slice(s, s + batch)))
    rate = n / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    W.captions(f)
    cap_rate = n / (time.perf_counter() - t0)
    print(f"render: {rate:,.0f} images/s on one core at {W.IMAGE_SIZE}x{W.IMAGE_SIZE} (batches of {batch}); "
          f"captions: {cap_rate:,.0f}/s")
    return rate


if __name__ == "__main__":
    main()
