"""Runs the schemathesis CLI (from the kit's .pydeps, on PYTHONPATH) with its arguments.

One workaround first: on CPython 3.11 (Debian 12's and this machine's), `ast.parse` of a large
module can raise `SystemError: AST constructor recursion depth mismatch` (a CPython bug fixed
in 3.12). Hypothesis parses source only to *describe* a filter lambda in a strategy's repr, and
schemathesis's coverage phase filters with lambdas from a 4,000-line module, so that bug turns
into "Runtime Error" for whole operations. The description is cosmetic: fall back to the one
Hypothesis itself uses when a lambda's source cannot be read.
"""

import sys

from hypothesis.internal import lambda_sources

_describe = lambda_sources._lambda_description


def _described(f, *args, **kwargs):
    try:
        return _describe(f, *args, **kwargs)
    except SystemError:
        return "lambda: <unknown>"


lambda_sources._lambda_description = _described

from schemathesis.cli import schemathesis  # noqa: E402

sys.argv[0] = "schemathesis"
sys.exit(schemathesis())
