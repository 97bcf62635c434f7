"""Publishing a leaderboard: result files of one or more runs as a static website.

`fexbench publish RUN_DIR... --out SITE` merges runs scored against the same ground truth
(merge), builds an overview, a page per task and per explainer (site), with pictures (plots)
and escaped HTML only (markup), and can screenshot the overview in headless Chromium (browser).
matplotlib and wordcloud are imported only when a site is built, not by the CLI's start.
"""
from __future__ import annotations

from fexbench.harness.publish.command import add_parser
from fexbench.harness.publish.merge import PublishError, merge

__all__ = ["PublishError", "merge", "publish", "add_parser"]


def publish(*args, **kwargs):
    """fexbench.harness.publish.site.publish (imported on first use)."""
    from fexbench.harness.publish.site import publish as build

    return build(*args, **kwargs)
