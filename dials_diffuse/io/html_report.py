"""A self-contained HTML report: one section per step with its results and plots.

The page embeds every PNG (base64), so it can be mailed or archived on its
own; it needs no JavaScript and opens in any browser.
"""

import base64
import html
import json
from pathlib import Path

_STYLE = """
body { font-family: sans-serif; margin: 2em auto; max-width: 70em; color: #222; }
h1 { border-bottom: 2px solid #446; }
h2 { margin-top: 2em; border-bottom: 1px solid #99a; }
table { border-collapse: collapse; margin: 0.5em 0; }
td, th { border: 1px solid #ccd; padding: 0.2em 0.6em; text-align: left; }
th { background: #eef; }
code { background: #f4f4f8; padding: 0.1em 0.3em; }
img { max-width: 100%; margin: 0.5em 0; border: 1px solid #ddd; }
.failed { color: #b00; font-weight: bold; }
"""


def _value_text(value):
    """A short readable form of a result value (lists of numbers abbreviated)."""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        shown = ", ".join(_value_text(v) for v in value[:6])
        if len(value) > 6:
            return f"{len(value)} values: {shown}, ..."
        return f"[{shown}]"
    if isinstance(value, dict):
        return json.dumps(value, default=str)[:300]
    return str(value)


def _image_tag(path):
    encoded = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(str(path))}" src="data:image/png;base64,{encoded}">'


def report_section(title, command, results, images, seconds=None, failed=False):
    """The HTML of one step: heading, command, results table and plots.

    Parameters
    ----------
    title : str
    command : str
        The command line the step ran with.
    results : dict
        Key results (name -> value), shown as a table.
    images : list of Path
        PNG files to embed (missing files are skipped).
    seconds : float, optional
        Wall time of the step.
    failed : bool
        Mark the step as failed.
    """
    parts = [f"<h2>{html.escape(title)}</h2>"]
    if failed:
        parts.append('<p class="failed">This step failed: see its log.</p>')
    parts.append(f"<p><code>{html.escape(command)}</code></p>")
    if seconds is not None:
        parts.append(f"<p>Wall time: {seconds:.1f} s</p>")
    if results:
        rows = "".join(
            f"<tr><th>{html.escape(str(name))}</th><td>{html.escape(_value_text(value))}</td></tr>"
            for name, value in results.items()
        )
        parts.append(f"<table>{rows}</table>")
    parts.extend(_image_tag(path) for path in images if Path(path).is_file())
    return "\n".join(parts)


def write_html_report(path, title, sections, preamble=""):
    """Write the page: `title`, an optional HTML `preamble`, then the sections' HTML."""
    page = (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>{preamble}"
        + "\n".join(sections)
        + "</body></html>\n"
    )
    Path(path).write_text(page, encoding="utf-8")
