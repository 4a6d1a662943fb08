"""Launching runs through the Dagster webserver's GraphQL API, exactly as the UI's Materialize and Launch
buttons do: the run executes in the code location with its settings and secrets, is queued, dequeued by the
daemon, and watched by run monitoring, so nothing of the pipeline's configuration is needed where this runs."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import httpx

RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"

LOCATIONS_QUERY = """{
  workspaceOrError {
    __typename
    ... on Workspace { locationEntries { name locationOrLoadError { __typename
      ... on RepositoryLocation { repositories { name jobs { name } } }
      ... on PythonError { message } } } }
    ... on PythonError { message }
  }
}"""
LAUNCH_RUN = """mutation Launch($executionParams: ExecutionParams!) {
  launchRun(executionParams: $executionParams) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on InvalidSubsetError { message }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on UnauthorizedError { message }
    ... on PipelineNotFoundError { message }
  }
}"""


class WebserverError(Exception):
    """The webserver could not be reached or refused the request; the message names it and why."""


class Webserver:
    def __init__(self, url: str, timeout_seconds: float = 60.0) -> None:
        self.url = url.rstrip("/")
        self.timeout_seconds = timeout_seconds

    def query(self, query: str, variables: dict | None = None) -> dict:
        try:
            response = httpx.post(
                f"{self.url}/graphql", json={"query": query, "variables": variables or {}}, timeout=self.timeout_seconds
            )
        except httpx.TransportError as error:
            raise WebserverError(
                f"no Dagster webserver answers at {self.url} ({type(error).__name__}); locally `make dev` starts "
                "it, and DAGSTER_WEBSERVER_URL says where it is"
            ) from None
        if response.status_code != 200:
            raise WebserverError(f"the webserver at {self.url} answered HTTP {response.status_code}")
        body = response.json()
        if body.get("errors"):
            raise WebserverError(f"the webserver at {self.url} refused the query: {body['errors'][0]['message']}")
        return body["data"]

    def job_location(self, job: str) -> tuple[str, str]:
        """(code location, repository) that has `job`; ad-hoc asset jobs exist in every repository with assets."""
        workspace = self.query(LOCATIONS_QUERY)["workspaceOrError"]
        if workspace["__typename"] != "Workspace":
            raise WebserverError(f"the webserver at {self.url} cannot load its workspace: {workspace.get('message')}")
        problems = []
        for entry in workspace["locationEntries"]:
            location = entry["locationOrLoadError"] or {}
            if location.get("__typename") != "RepositoryLocation":
                problems.append(f"code location {entry['name']} did not load: {location.get('message', '')[:300]}")
                continue
            for repository in location["repositories"]:
                if job.startswith("__") or job in {j["name"] for j in repository["jobs"]}:
                    return entry["name"], repository["name"]
        found = "".join(f"; {problem}" for problem in problems)
        raise WebserverError(f"no code location at {self.url} has the job {job!r}{found}")

    def launch(
        self,
        job: str,
        assets: Iterable[str] = (),
        partitions: Sequence[str] = (),
        tags: dict[str, str] | None = None,
    ) -> str:
        """Launch a run of `job` (its `assets` only, if given) for the days `partitions` (a range of daily
        partitions, as the schedule asks for them); returns the run id."""
        location, repository = self.job_location(job)
        selector: dict = {"repositoryLocationName": location, "repositoryName": repository, "jobName": job}
        if assets := sorted(assets):
            selector["assetSelection"] = [{"path": name.split("/")} for name in assets]
        run_tags = dict(tags or {})
        if partitions:
            run_tags |= {RANGE_START_TAG: min(partitions), RANGE_END_TAG: max(partitions)}
        variables = {
            "executionParams": {
                "selector": selector,
                "executionMetadata": {"tags": [{"key": key, "value": value} for key, value in run_tags.items()]},
            }
        }
        launched = self.query(LAUNCH_RUN, variables)["launchRun"]
        if launched["__typename"] != "LaunchRunSuccess":
            reason = launched.get("message") or "; ".join(e["message"] for e in launched.get("errors", []))
            kind = launched["__typename"]
            raise WebserverError(f"the webserver at {self.url} did not launch {job}: {kind}: {reason}")
        return launched["run"]["runId"]
