"""Fused CuPy update kernels, each checkable on NumPy without a GPU.

An update rule has two forms with one signature: `_<rule>_numpy(...)`, in-place NumPy ufuncs,
and a `Kernel`, one CuPy ElementwiseKernel doing the whole update in a single pass (PyTorch's
pattern of named per-backend functions and one dispatch). `Kernel.run_numpy` evaluates the
kernel's own C body on NumPy arrays (a tiny translator: statements `x = e`, `x += e`,
`x -= e`, `x *= e`, with `sqrt`, `max` and `c ? a : b`), so tests/optim/test_kernels.py
compares every kernel with its NumPy rule on every commit: a change made to one form and not
to the other fails there, with or without a GPU.
"""
import re

from .. import backend

_STATEMENT = re.compile(r"^\s*([A-Za-z_]\w*)\s*([-+*]?=)\s*(.+?)\s*$")


def _ternaries(expr, name):
    """C's (c ? a : b), written inside parentheses, as _where(c, a, b)."""
    while "?" in expr:
        q = expr.index("?")
        i, depth = q, 0
        while i >= 0 and not (expr[i] == "(" and depth == 0):
            depth += {")": 1, "(": -1}.get(expr[i], 0) if i != q else 0
            i -= 1
        j, depth, colon = q, 0, None
        while j < len(expr) and not (expr[j] == ")" and depth == 0):
            depth += {"(": 1, ")": -1}.get(expr[j], 0)
            if expr[j] == ":" and depth == 0 and colon is None:
                colon = j
            j += 1
        if i < 0 or j == len(expr) or colon is None:
            raise ValueError(f"kernel {name}: write a ternary inside parentheses: {expr!r}")
        expr = (expr[:i] + f"_where({expr[i + 1:q]}, {expr[q + 1:colon]}, {expr[colon + 1:j]})"
                + expr[j + 1:])
    return expr


def _names(params):
    """['g', 'lr'] from 'T g, T lr'."""
    return [p.split()[-1] for p in params.split(",") if p.strip()]


class Kernel:
    """An elementwise update kernel: in_params, out_params (updated in place), C body, name."""

    def __init__(self, name, in_params, out_params, body):
        self.name, self.in_params, self.out_params, self.body = name, in_params, out_params, body
        self.args = _names(in_params) + _names(out_params)
        self._python = None

    def __call__(self, *args):
        """Run on CuPy arrays (scalars typed like the parameters)."""
        return backend.elementwise_kernel(self.in_params, self.out_params, self.body,
                                          self.name)(*args)

    def run_numpy(self, *args):
        """Evaluate the C body on NumPy arrays, updating the out params in place."""
        if self._python is None:
            self._python = compile(self._translate(), f"<kernel {self.name}>", "exec")
        np = backend.np
        env = dict(zip(self.args, args), sqrt=np.sqrt, max=np.maximum, _where=np.where)
        exec(self._python, env)

    def _translate(self):
        lines = []
        for stmt in filter(str.strip, self.body.split(";")):
            m = _STATEMENT.match(stmt)
            if m is None:
                raise ValueError(f"kernel {self.name}: cannot evaluate {stmt.strip()!r} on NumPy")
            target, op, expr = m.groups()
            expr = _ternaries(expr, self.name)
            lines.append(f"{target}[...] {op} {expr}")
        return "\n".join(lines)
