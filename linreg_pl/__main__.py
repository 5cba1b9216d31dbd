"""`python -m linreg_pl` and the `linreg-pl` command: `linreg_pl.cli.main`, with the garbage collector kept off the
~600,000 lasting objects that importing torch and Lightning creates (frozen once imported). Measured by
`python benchmarks/throughput.py --sections process`; without it, `run` is `main()`."""

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
