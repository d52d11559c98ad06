#!/usr/bin/python3
"""t1_torch.py: the T1 seed workflow (DESIGN.md section 7) in PyTorch, timed stage by stage.

The PyTorch side of bench/t1_stages.py; every piece of the task (data, M1, fastai Adam, 1cycle,
lr_find, validation) comes from tools/t1_reference.py. One process does what thawd does in its
two jobs (bench/t1_stages.py writes their specs):

  data         read Fashion-MNIST, select the source and target images, normalise with the
               fixed source statistics 0.2402 / 0.3424 (as thawd's specs do)
  pretrain     M1 from scratch, fit_one_cycle(2, 3e-3), batch 128, on the 36,000 source images,
               validating on the 6,000 source test images after each epoch (as fastai and thawd)
  save_source  torch.save of the whole model's state_dict
  load_body    new M1 with a 4-class head (PyTorch default init), torch.load of the source
               file, body weights loaded into it
  freeze       body frozen except BatchNorm, Adam state cleared
  lr_find      fastai defaults (1e-7 .. 10, 100 iterations, stop on divergence), batch 8
  fit_frozen   fit_one_cycle(3, 1e-2), batch 8, validating on the 4,000 target test images
               after each epoch
  unfreeze     everything trainable, Adam state cleared
  fit_unfrozen fit_one_cycle(10, slice(1e-4, 1e-2)) without its last validation
  final_valid  the last epoch's validation on the 4,000 target test images
  save         torch.save of the final state_dict

    /usr/bin/python3 bench/t1_torch.py --json OUT.json [--threads 2] [--quick]

Writes {"stages": {name: seconds}, "accuracy": ..., ...} to --json; the seconds come from
time.perf_counter around each stage (import time and interpreter start-up are not in any stage).
"""
import time

T_START = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
import torch  # noqa: E402

import t1_reference as ref  # noqa: E402

MEAN, STD = 0.2402, 0.3424


class Timer:
    """Accumulates wall seconds per stage name."""

    def __init__(self):
        self.stages = {}

    def add(self, name, seconds):
        self.stages[name] = self.stages.get(name, 0.0) + seconds

    def run(self, name, fn, *args, **kw):
        t0 = time.perf_counter()
        out = fn(*args, **kw)
        self.add(name, time.perf_counter() - t0)
        print("%-12s %8.3f s" % (name, self.stages[name]), file=sys.stderr, flush=True)
        return out


def fit_validating(tm, name, model, opt, data, n_epoch, lr, bs, gen, last_valid_name=None):
    """fit_one_cycle validating after every epoch; the time of the last epoch's validation is
    booked to last_valid_name if given. Returns the per-epoch (valid_loss, accuracy)."""
    hist = []

    def on_epoch(e):
        t0 = time.perf_counter()
        hist.append(ref.validate(model, data["xte"], data["yte"]))
        if last_valid_name and e == n_epoch - 1:
            dt = time.perf_counter() - t0
            tm.add(last_valid_name, dt)
            tm.add(name, -dt)

    tm.run(name, ref.fit_one_cycle, model, opt, data["xtr"], data["ytr"], n_epoch, lr, bs, gen,
           on_epoch=on_epoch)
    return hist


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", required=True, help="output file")
    ap.add_argument("--data", default=ref.DATA)
    ap.add_argument("--out", default="/tmp/thawd-t1stages/torch-out", help="weights directory")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="1 source epoch, fits of 1 and 3")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    src_epochs, e_head, e_all = (1, 1, 3) if args.quick else (2, 3, 10)
    os.makedirs(args.out, exist_ok=True)
    t_import = time.perf_counter() - T_START
    tm = Timer()
    seed = args.seed

    src, tgt, _, _ = tm.run("data", ref.load_task, args.data, MEAN, STD)

    def new_model(n_out):
        torch.manual_seed(seed)
        model = ref.make_m1(n_out)
        return model, ref.FastaiAdam(ref.layer_groups(model), ref.no_wd_params(model))

    t0 = time.perf_counter()
    model, opt = new_model(len(ref.SOURCE_CLASSES))
    gen = torch.Generator().manual_seed(seed)
    tm.add("pretrain", time.perf_counter() - t0)
    src_hist = fit_validating(tm, "pretrain", model, opt, src, src_epochs, 3e-3, 128, gen)
    src_path = os.path.join(args.out, "source.pt")
    tm.run("save_source", torch.save, model.state_dict(), src_path)

    def load_body():
        model, opt = new_model(len(ref.TARGET_CLASSES))
        state = torch.load(src_path)
        model[0].load_state_dict({k[2:]: v for k, v in state.items() if k.startswith("0.")})
        return model, opt

    model, opt = tm.run("load_body", load_body)
    gen = torch.Generator().manual_seed(seed)

    def freeze():
        ref.freeze_body(model)
        opt.clear_state()

    def unfreeze():
        ref.unfreeze(model)
        opt.clear_state()

    tm.run("freeze", freeze)
    lrs, _, valley = tm.run("lr_find", ref.lr_find, model, opt, tgt["xtr"], tgt["ytr"], 8, gen)
    head_hist = fit_validating(tm, "fit_frozen", model, opt, tgt, e_head, 1e-2, 8, gen)
    tm.run("unfreeze", unfreeze)
    all_hist = fit_validating(tm, "fit_unfrozen", model, opt, tgt, e_all, (1e-4, 1e-2), 8, gen,
                              last_valid_name="final_valid")
    tm.run("save", torch.save, model.state_dict(), os.path.join(args.out, "transfer.pt"))

    doc = {
        "implementation": "pytorch",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "quick": args.quick,
        "seed": seed,
        "import_s": t_import,
        "stages": tm.stages,
        "source_accuracy": src_hist[-1][1],
        "head_accuracy": head_hist[-1][1],
        "accuracy": all_hist[-1][1],
        "lr_find_points": len(lrs),
        "lr_find_valley": valley,
    }
    with open(args.json, "w") as f:
        json.dump(doc, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
