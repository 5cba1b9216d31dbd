"""`python -m linreg_pl` and the `linreg-pl` command: `linreg_pl.cli.main`, with Python's cyclic
garbage collector kept off the objects that importing torch and Lightning creates.

    python -m linreg_pl fit --config configs/default.yaml

Those imports create about 600,000 objects that live as long as the process, none of them garbage.
Left in the collector's sight, every full collection walks them: several while importing, more while
the CLI runs, and one at exit. Frozen (`gc.freeze`) once imported, they are skipped; garbage made later
is collected as usual. Measured with `python benchmarks/throughput.py --sections process` (the
default experiment's whole process, with and without this). Without it, `run` is just `main()`.
"""

import gc


def run() -> None:
    gc.disable()
    try:
        from linreg_pl.cli import main
    finally:
        gc.freeze()
        gc.enable()
    main()


if __name__ == "__main__":
    run()
