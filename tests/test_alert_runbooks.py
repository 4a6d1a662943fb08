"""Every alert kind has a runbook an on-call stranger can follow, and every alert links it."""

import re

import pytest

from pipeline_project.alerting.alert import RUNBOOKS, AlertKind
from pipeline_project.local.environment import REPO_ROOT

# The sections of the template in runbooks/README.md, in order.
TEMPLATE_SECTIONS = (
    "Is it real?",
    "Scope",
    "Causes, most likely first",
    "Safe rerun",
    "Do NOT",
    "Verify recovery",
    "Escalate",
    "Afterwards",
)


@pytest.mark.parametrize("kind", list(AlertKind), ids=str)
def test_each_alert_kind_has_a_runbook_that_follows_the_template(kind):
    path = REPO_ROOT / RUNBOOKS[kind]
    assert path.is_file(), f"{kind} alerts link {RUNBOOKS[kind]}, which does not exist"
    text = path.read_text()
    trigger = next((line for line in text.splitlines() if "Trigger" in line), "")
    assert f"`{kind.value}`" in trigger, f"{path.name} does not name the alert kind `{kind.value}` in its Trigger line"
    headings = re.findall(r"^## \d\. (.+)$", text, re.M)
    assert [next((s for s in TEMPLATE_SECTIONS if h.startswith(s)), h) for h in headings] == list(TEMPLATE_SECTIONS)
    assert re.search(r"\*\*Owner:\*\* team:[a-z-]+", text)
    assert re.search(r"\*\*Reviewed:\*\* \d{4}-\d{2}-\d{2}", text)
    assert re.search(r"^\*\*TL;DR\*\*", text, re.M) and re.search(r"^\*\*Impact:\*\*", text, re.M)


def test_the_runbook_index_lists_every_alert_kind():
    index = (REPO_ROOT / "runbooks" / "README.md").read_text()
    for kind, runbook in RUNBOOKS.items():
        assert f"`{kind.value}`" in index and runbook.removeprefix("runbooks/") in index
