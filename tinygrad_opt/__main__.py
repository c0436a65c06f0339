"""`python -m tinygrad_opt` and the `tinygrad-opt` console script: the command line (cli.py)."""
import os
import sys

BLAS_THREADS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                "VECLIB_MAXIMUM_THREADS")


def entry_point():
    """`tinygrad-opt` and `python -m tinygrad_opt`: main() with one BLAS thread per process.

    These runs multiply small matrices, which many BLAS threads slow down (curvature took 32 s
    with the default threads, 6 s with one). BLAS reads its thread count once, when NumPy
    loads, and importing the package has loaded it: so when the user set none of
    BLAS_THREADS, set them all to 1 and start the same command line again.
    """
    if not any(v in os.environ for v in BLAS_THREADS):
        os.environ.update(dict.fromkeys(BLAS_THREADS, "1"))
        argv = getattr(sys, "orig_argv", None)          # Python >= 3.10
        if argv and sys.executable and os.name == "posix":
            try:
                os.execv(sys.executable, [sys.executable, *argv[1:]])
            except OSError:
                pass                                    # go on with NumPy's threads
    from .cli import main
    sys.exit(main())


if __name__ == "__main__":
    entry_point()
