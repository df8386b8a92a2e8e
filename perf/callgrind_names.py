"""Callgrind's name compression, shared by the perf scripts that read
callgrind output: a name is written once as `(id) name` and later only as
`(id)`, separately for functions (`fn`, `cfn`) and files (`fl`, `fi`, `fe`)."""
import re


class Names:
    """Resolves `(id) name` / `(id)` references for one callgrind file."""

    def __init__(self):
        self.known = {}

    def resolve(self, kind, rest):
        m = re.match(r"\((\d+)\)(?: (.*))?", rest)
        if not m:
            return rest
        key = (kind, m.group(1))
        if m.group(2) is not None:
            self.known[key] = m.group(2)
        return self.known.get(key, rest)
