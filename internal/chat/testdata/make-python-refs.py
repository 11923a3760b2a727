"""Regenerates python-refs.json: reference outputs of Python itself for the
parts of internal/chat that imitate Python.

    python3 make-python-refs.py ../../../goldens/mllama-tiny-dev/base/chat_template.jinja > python-refs.json

- "renders": the fixture's chat template rendered by Jinja2 (3.1.6 here, as in
  the spec's runs) set up as transformers 5.17's render_jinja_template sets it
  up (chat-template-and-preprocessing.md section 3): an
  ImmutableSandboxedEnvironment with trim_blocks, lstrip_blocks and
  loopcontrols, tojson as json.dumps(ensure_ascii=False), raise_exception
  raising TemplateError, strftime_now, tools and documents passed as None when
  absent, and the special tokens of the fixture's tokenizer_config.json. The
  conversations are the spec's cases (sections 2.4-2.6) and a few more.
- "strftime": datetime.strftime for fixed naive datetimes.
- "utf8": bytes.decode("utf-8", "replace") for malformed byte strings.
"""
import datetime
import json
import sys

import jinja2
import jinja2.ext
from jinja2.exceptions import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

FIXED_NOW = datetime.datetime(2026, 11, 27, 9, 5, 3, 123456)


def raise_exception(message):
    raise TemplateError(message)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def strftime_now(fmt):
    return FIXED_NOW.strftime(fmt)


env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
env.filters["tojson"] = tojson
env.globals["raise_exception"] = raise_exception
env.globals["strftime_now"] = strftime_now
template = env.from_string(open(sys.argv[1], encoding="utf-8").read())
special = {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>", "pad_token": "<|finetune_right_pad_id|>"}

weather = {"type": "function", "function": {"name": "get_weather", "description": "Weather for a city, \u00e9t\u00e9 <>&'\"",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer", "default": 1.0}},
                          "required": ["city"]}}}
f = {"type": "function", "function": {"name": "f"}}
D = {"date_string": "26 Jul 2024"}
CASES = {
    "A_no_date": ([{"role": "user", "content": "Hello"}], {}),
    "B": ([{"role": "user", "content": "Hello"}], D),
    "C": ([{"role": "system", "content": "  Be brief. "}, {"role": "user", "content": " Hi "},
           {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Bye"}], D),
    "D": ([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe this image."}]}], D),
    "E": ([{"role": "user", "content": [{"type": "text", "text": "Describe "}, {"type": "image"}]}], dict(D, add_generation_prompt=False)),
    "F": ([{"role": "system", "content": "S"}, {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "x"}]}], D),
    "G": ([{"role": "system", "content": [{"type": "text", "text": "Sys in list"}]}, {"role": "user", "content": "Hi"}], D),
    "H": ([{"role": "system", "content": "S"}, {"role": "user", "content": "Weather in Paris?"}], dict(D, tools=[weather])),
    "I": ([{"role": "system", "content": "S"}, {"role": "user", "content": "Weather in Paris?"}], dict(D, tools=[weather], tools_in_user_message=False)),
    "J_int_content": ([{"role": "user", "content": "Hi"}, {"role": "tool", "content": 5}], D),
    "J_tool_flow": ([{"role": "user", "content": "Weather?"},
                     {"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris", "unit": "C"}}}]},
                     {"role": "tool", "content": "22C"}, {"role": "ipython", "content": {"temp": 22}}], D),
    "K": ([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "yo", "tool_calls": None}], D),
    "L": ([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "A?"}]}, {"role": "assistant", "content": "a"},
           {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "B?"}]}], D),
    "N": ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x/y.png"}}, {"type": "text", "text": "What?"}]}], D),
    "O": ([{"role": "user", "content": "Hi"}, {"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": "{\"city\": \"Paris\"}"}}]}], D),
    "P": ([{"role": "user", "content": [{"type": "text", "text": "Weather?"}]}], dict(D, tools=[f])),
    "Q_custom_tools": ([{"role": "user", "content": "Weather in Paris?"}], dict(D, custom_tools=[weather])),
    "R_empty_tools": ([{"role": "user", "content": "Hi"}], dict(D, tools=[])),
    "S": ([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "calling", "tool_calls": [{"function": {"name": "f", "arguments": {}}}]}], D),
    "T": ([{"role": "user", "content": "Hi"}, {"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": {}}}, {"function": {"name": "g", "arguments": {}}}]}], D),
    "U_no_tools": ([{"role": "assistant", "content": "A"}, {"role": "user", "content": "B"}], D),
    "U_tools": ([{"role": "assistant", "content": "A"}, {"role": "user", "content": "B"}], dict(D, tools=[f])),
    "V": ([{"role": "system", "content": "S"}], dict(D, tools=[f])),
    "W": ([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": None, "tool_calls": [{"function": {"name": "f", "arguments": {}}}]}], D),
    "X": ([{"role": "user", "content": "Hi"}, {"role": "tool", "content": [{"type": "text", "text": "22C"}]}], D),
    "numbers_and_escapes": ([{"role": "user", "content": "q"}, {"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments":
        {"i": 9007199254740993, "neg": -0.0, "small": 1e-7, "big": 1e22, "f": 2.5, "t": True, "n": None, "s": "tab\tnl\n\u0001\u2028\U0001F600"}}}]}], D),
    "system_whitespace_only": ([{"role": "system", "content": " \n\t "}, {"role": "user", "content": [{"type": "image"}]}], D),
    "unicode_trim": ([{"role": "system", "content": "\u3000\u00a0Be brief.\u2009\n"}, {"role": "user", "content": "Hi"}], D),
    "role_passthrough": ([{"role": "narrator", "content": "Once"}, {"role": "user", "content": "Then?"}], dict(D, add_generation_prompt=False)),
}

renders = []
for name, (messages, kwargs) in CASES.items():
    kwargs = dict(kwargs)
    agp = kwargs.pop("add_generation_prompt", True)
    tools = kwargs.pop("tools", None)
    entry = {"name": name, "messages": messages, "kwargs": dict(kwargs, add_generation_prompt=agp, **({"tools": tools} if tools is not None else {}))}
    try:
        entry["rendered"] = template.render(**special, messages=messages, tools=tools, documents=None, add_generation_prompt=agp, **kwargs)
    except Exception as e:  # noqa: BLE001 - the exception is the reference
        entry["error"], entry["error_type"] = str(e), type(e).__name__
    renders.append(entry)

formats = ["%d %b %Y", "%Y-%m-%d %H:%M:%S", "%a %A %b %B", "%c", "%x %X", "%I:%M %p", "%j %U %W %w %u %V %G",
           "%e|%-d|%-m|%-H|%k|%l", "%y %C", "%f", "%z|%Z", "%%d %%%", "%D %F %T %R", "%h %n%t", "100%", "%Q %q"]
times = [FIXED_NOW, datetime.datetime(2024, 1, 1, 0, 0, 0), datetime.datetime(2021, 1, 3, 23, 59, 59, 1),
         datetime.datetime(2020, 12, 31, 12, 0, 0), datetime.datetime(1999, 7, 5, 13, 7, 9)]
strftime = [{"time": t.isoformat(), "format": fmt, "out": t.strftime(fmt)} for t in times for fmt in formats]

raw = [b"\xf0\x9f", b"\xf0\x9f\x98", b"a\xe2\x82b", b"\xed\xa0\x80", b"\xc0\xaf", b"\xf4\x90\x80\x80", b"\xff\xfe",
       b"\xe0\x80\x80", b"\xc2", b"\xe2\x82\xac\x80", b"ok\xf8\x88\x80\x80\x80ok", b"\xf1\x80\x80"]
utf8 = [{"hex": r.hex(), "text": r.decode("utf-8", "replace")} for r in raw]

out = {"python": sys.version.split()[0], "jinja2": jinja2.__version__, "renders": renders, "strftime": strftime, "utf8": utf8}
sys.stdout.write(json.dumps(out, ensure_ascii=False, indent=1) + "\n")
