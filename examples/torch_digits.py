"""A PyTorch pipeline with the cellular SP learning online: digits -> SP (learning after every
input, boosting continuously) -> a linear classifier trained by SGD at the same time.

    python examples/torch_digits.py                         # TorchSP on the CPU
    python examples/torch_digits.py --device cuda           # TorchSP on a GPU
    python examples/torch_digits.py --target verilator      # the array's Verilator model

It prints the classifier's accuracy as both learn, then its accuracy on held-out digits with
the SP inferring, and checks the SP's final state (and its held-out outputs) against the golden
model fed the same inputs: exit status 0 when bit-exact, 1 otherwise, 2 on a bad option.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

from cellsp.host.torch_hardware import spatial_pooler
from cellsp.sim import GoldenModel, SPConfig
from cellsp.sim.datasets import load_digits_binary


def parse(argv) -> argparse.Namespace:
    """The example's options."""
    p = argparse.ArgumentParser(prog="torch_digits.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--target", default="torch",
                   help="torch (default), verilator, or serial:PORT[@BAUD] for a board")
    p.add_argument("--device", default="cpu", help="TorchSP's device: cpu (default) or cuda")
    p.add_argument("--cells", type=int, default=32, help="cells per side (default 32, the "
                                                        "default config)")
    p.add_argument("--cells-per-pe", type=int, default=16,
                   help="cells per processing element of a hardware target (default 16)")
    p.add_argument("--passes", type=int, default=2, help="learning passes (default 2)")
    p.add_argument("--limit", type=int, help="use only the first N digits (at least 10)")
    p.add_argument("--lr", type=float, default=0.05, help="SGD learning rate (default 0.05)")
    p.add_argument("--every", type=int, default=200,
                   help="print the running accuracy every this many inputs (default 200)")
    args = p.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error(f"--device {args.device}: this torch ({torch.__version__}) sees no CUDA device")
    if args.limit is not None and args.limit < 10:
        p.error("--limit must be at least 10")
    if min(args.cells, args.passes, args.every, args.cells_per_pe) < 1:
        p.error("--cells, --cells-per-pe, --passes and --every must be at least 1")
    return args


def sgd_step(model: torch.nn.Module, lr: float) -> None:
    """One plain SGD step on `model`'s parameters (what torch.optim.SGD does without momentum;
    importing torch.optim loads torch's compiler stack, seconds on a small machine)."""
    with torch.no_grad():
        for parameter in model.parameters():
            parameter -= lr * parameter.grad


def main(argv=None) -> int:
    """Run the pipeline; 0 when the SP's final state and outputs equal the golden model's."""
    args = parse(argv)
    cfg = SPConfig(cell_shape=(args.cells, args.cells))
    X, y = load_digits_binary(cfg.input_shape)
    order = np.random.default_rng(cfg.seed).permutation(len(X))[:args.limit]
    X, y = X[order], y[order]
    split = 2 * len(X) // 3
    hardware = {} if args.target == "torch" else {"cells_per_pe": args.cells_per_pe}
    sp = spatial_pooler(cfg, target=args.target, device=args.device, **hardware)
    device = args.device if args.target == "torch" else "cpu"
    classifier = torch.nn.Linear(cfg.num_cells, 10).to(device)
    loss_fn = torch.nn.CrossEntropyLoss()
    labels = torch.from_numpy(y).to(device)
    print(f"digits: {split} to learn from ({args.passes} passes), {len(X) - split} held out; "
          f"SP {args.cells}x{args.cells} cells on {args.target}"
          f"{f' ({device})' if args.target == 'torch' else ''}, learning after every input")

    sp.train()
    seen, hits = 0, []
    for p in range(args.passes):
        for k in range(split):
            features = sp(X[k:k + 1]).reshape(1, -1).to(device, torch.float32)
            logits = classifier(features)
            loss = loss_fn(logits, labels[k:k + 1])
            classifier.zero_grad()
            loss.backward()
            sgd_step(classifier, args.lr)
            hits.append(int(logits.argmax(1).item() == y[k]))
            seen += 1
            if seen % args.every == 0:
                print(f"  pass {p + 1}, input {seen:5d}: accuracy over the last {args.every} "
                      f"(before each update) {np.mean(hits[-args.every:]):.1%}")

    sp.eval()
    with torch.no_grad():
        held_out = sp(X[split:])
        predicted = classifier(held_out.reshape(len(held_out), -1).to(device, torch.float32))
    accuracy = (predicted.argmax(1) == labels[split:]).float().mean().item()
    print(f"held-out accuracy, SP inferring: {accuracy:.1%}")

    golden = GoldenModel(cfg)
    for _ in range(args.passes):
        golden.run(X[:split], learn=True)
    differences = golden.state().differences(sp.state(0))
    same_outputs = np.array_equal(golden.infer(X[split:]), held_out[:, 0].cpu().numpy())
    if hasattr(sp, "close"):
        sp.close()
    if differences or not same_outputs:
        print(f"NOT bit-exact with the golden model: {differences[:5]}"
              f"{'' if same_outputs else '; the held-out outputs differ'}")
        return 1
    print(f"the SP's final state and its {len(X) - split} held-out outputs are bit-exact with "
          f"the golden model's after {seen} learning steps")
    return 0


if __name__ == "__main__":
    sys.exit(main())
