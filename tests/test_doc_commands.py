"""Every ``python <script> ...`` command in the shell blocks of the pages a user reads (README,
CONTRIBUTING, tools/README.md, docs/) names a script or module that exists, passes that
script's own argument parser as written, and names configs whose keys (with the command's
overrides) merge. The commands that train or export are run by the tests of their tools; this
catches the doc that drifts from a renamed flag, config or key."""
import argparse
import importlib.util
import os
import re
import shlex
from unittest import mock

import pytest
from support.tools import REPO, _script_module

from rsp_d2.config import load_config
from rsp_d2.engine import argument_parser

PAGES = (["README.md", "CONTRIBUTING.md", os.path.join("tools", "README.md")]
         + sorted(os.path.join("docs", n) for n in os.listdir(os.path.join(REPO, "docs"))
                  if n.endswith(".md")))
# Shell operators that end one command of a line (not the & of a redirection such as 2>&1).
_SEPARATORS = re.compile(r"&&|\|\||;|\||(?<![<>])&(?!>)")
# A redirection token: the command's arguments end before it.
_REDIRECTION = re.compile(r"^\d*(>>?|<)")


def _commands():
    """(page, argv after the interpreter) of each python command of the pages' shell blocks;
    commands with a shell variable or an optional ``[...]`` part are left out (they are
    templates, not commands)."""
    found = []
    for page in PAGES:
        with open(os.path.join(REPO, page)) as f:
            text = f.read()
        for block in re.findall(r"^```(?:bash|sh|shell)\n(.*?)^```", text, re.S | re.M):
            for line in re.sub(r"\\\n\s*", " ", block).splitlines():
                line = re.sub(r"(^|\s)#.*", "", line).strip()
                for segment in filter(None, (s.strip() for s in _SEPARATORS.split(line))):
                    if "$" in segment or "[" in segment:
                        continue
                    tokens = shlex.split(segment)
                    while tokens and re.match(r"^\w+=", tokens[0]):  # VAR=value prefixes
                        tokens.pop(0)
                    cut = [i for i, t in enumerate(tokens) if _REDIRECTION.match(t)]
                    tokens = tokens[:cut[0]] if cut else tokens
                    if len(tokens) > 1 and re.search(r"(^|/)python[\d.]*$", tokens[0]):
                        found.append((page, tokens[1:]))
    return found


COMMANDS = _commands()


class _Parsed(Exception):
    pass


def _parsed_args(script, args):
    """`args` as `script`'s own parser reads them (its ``main`` stopped right after parsing);
    pytest.fail with argparse's message where it refuses them."""
    if script == "train_net.py":
        parse = lambda: argument_parser().parse_args(args)  # noqa: E731 (train_net.py's cli)
    else:
        module = _script_module(script)
        parse = lambda: module.main(list(args))  # noqa: E731
    original = argparse.ArgumentParser.parse_args

    def stop_after_parsing(self, argv=None, namespace=None):
        raise _Parsed(original(self, argv, namespace))

    with mock.patch.object(argparse.ArgumentParser, "parse_args", stop_after_parsing):
        try:
            namespace = parse()
        except _Parsed as parsed:
            return parsed.args[0]
        except SystemExit:
            pytest.fail(f"{script} refuses {args}")
    return namespace  # train_net.py's parser, called directly


def test_the_pages_hold_commands():
    scripts = {args[0] for _, args in COMMANDS}
    assert {"train_net.py", "tools/compare_heads.py", "tools/export_model.py"} <= scripts, scripts
    assert len(COMMANDS) >= 30


@pytest.mark.parametrize("page,args", COMMANDS,
                         ids=[f"{p}:{' '.join(a)[:60]}" for p, a in COMMANDS])
def test_documented_command_parses(page, args):
    if args[0] == "-m":
        assert importlib.util.find_spec(args[1].split(".")[0]) is not None, args
        return
    script = args[0]
    assert os.path.isfile(os.path.join(REPO, script)), f"{page}: no {script}"
    namespace = _parsed_args(script, args[1:])
    config = getattr(namespace, "config_file", None)
    if config and not config.isupper():  # CFG stands for any config
        opts = getattr(namespace, "opts", None) or []
        load_config(config, opts)  # an unknown key or a missing file raises
