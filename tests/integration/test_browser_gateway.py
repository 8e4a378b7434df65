# ruff: noqa: F811 - pytest fixtures are imported from helper modules and used as arguments
"""The investigators' page in headless Chromium (Debian's chromium + chromedriver) against the
real gateway, broker, stream worker and model service.

Which text can carry a payload? Claim fields are numbers and a strictly patterned claim_id,
but a Decision on the outcome topics holds free text (reason messages and features, model
name and version) written by whichever producer published it, and the page echoes what an
investigator types into the lookup box. Both paths are exercised with HTML/script payloads.
"""

from __future__ import annotations

import json
import tempfile
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from confluent_kafka import Producer
from selenium import webdriver
from selenium.common.exceptions import (
    ElementNotInteractableException,
    StaleElementReferenceException,
    WebDriverException,
)
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select, WebDriverWait

from schemas import (
    Claim,
    Decision,
    Label,
    ModelRef,
    Reason,
    ShadowScore,
    ShadowVerdict,
    StreamSource,
)
from schemas.label import Disposition
from tests.integration.gateway_harness import (  # noqa: F401 - pytest fixtures
    GatewayServer,
    GatewayTopics,
    StreamWorker,
    gateway_env,
    gateway_factory,
    gateway_model,
    gateway_topics,
    labels_topic,
    stream_worker_factory,
)
from tests.integration.kafka_helpers import consume_until
from tests.integration.model_service_fixture import ModelServiceProcess

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WAIT_S = 30
PAYLOADS = {
    "message": '<img src=x onerror="window.__pwned=1">reason',
    "feature": "<script>window.__pwned=2</script>",
    "model": '<b id="pwned-model">bold</b>',
    "version": '"><svg onload="window.__pwned=3">',
    "lookup": '<img src=x onerror="window.__pwned=4">',
}


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--window-size=1400,1200"):
        options.add_argument(flag)
    profile = tempfile.mkdtemp(prefix="chromium-", dir=tmp_path)
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(WAIT_S)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def gateway(gateway_factory: Callable[..., GatewayServer], kafka_bootstrap: str,
            gateway_model: ModelServiceProcess, gateway_topics: GatewayTopics,
            stream_worker_factory: Callable[..., StreamWorker], group_id: str) -> GatewayServer:
    """The page's form and upload are decided by a real stream worker."""
    stream_worker_factory(gateway_model.url).wait_assigned()
    return gateway_factory(gateway_env(kafka_bootstrap, gateway_topics, group_id,
                                       GATEWAY_DECISION_TIMEOUT_S="30"))


def hostile_decision(claim_id: str) -> Decision:
    """A contract-valid decision whose free-text fields are markup."""
    claim = Claim.from_json(json.dumps({
        "claim_id": claim_id, "claim_amount": 99_000.0, "num_services": 9, "patient_age": 80,
        "provider_id": 5, "days_since_last_claim": 1, "submitted_at": "2026-11-26T18:00:00Z"}))
    return Decision(
        claim=claim, decision="investigate", anomaly_score=0.9, threshold=0.55,
        model=ModelRef(name=PAYLOADS["model"], version=PAYLOADS["version"]),
        reasons=[Reason(feature=PAYLOADS["feature"], value=99_000.0, percentile=99.9,
                        direction="high", message=PAYLOADS["message"])],
        decided_at=datetime.now(UTC), source=StreamSource(topic="claims", partition=0, offset=1),
    )


def publish(bootstrap: str, topic: str, decision: Decision) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    producer.produce(topic, key=decision.claim_id.encode(), value=decision.to_json())
    assert producer.flush(30) == 0


def severe_logs(driver: WebDriver) -> list[dict[str, Any]]:
    return [entry for entry in driver.get_log("browser")  # type: ignore[attr-defined]
            if entry["level"] == "SEVERE"]


def queue_row(driver: WebDriver, claim_id: str) -> Any:
    def find(d: WebDriver) -> Any:
        rows = d.find_elements(By.CSS_SELECTOR, f'#queue tbody tr[data-claim-id="{claim_id}"]')
        return rows[0] if rows else False

    return WebDriverWait(driver, WAIT_S, poll_frequency=0.2).until(find)


def row_view(driver: WebDriver, claim_id: str, tags: tuple[str, ...] = ()
             ) -> tuple[str, dict[str, int]]:
    """The claim's row text and how many elements of each tag it holds, read in one retried
    step: the page rebuilds its rows on every refresh, so a row found a moment ago may be
    stale by the time it is read."""
    def read(d: WebDriver) -> tuple[str, dict[str, int]]:
        row = queue_row(d, claim_id)
        return row.text, {tag: len(row.find_elements(By.TAG_NAME, tag)) for tag in tags}

    view: tuple[str, dict[str, int]] = WebDriverWait(
        driver, WAIT_S, poll_frequency=0.2,
        ignored_exceptions=[StaleElementReferenceException]).until(read)
    return view


def in_row(driver: WebDriver, claim_id: str, css: str, action: Callable[[Any], None]) -> None:
    """Act on an element of the claim's queue row; the page rebuilds the rows on every
    refresh, so an element found a moment ago may be gone (stale) or, caught mid-rebuild,
    not yet laid out (not interactable): find it again until the action works."""
    def attempt(d: WebDriver) -> bool:
        action(queue_row(d, claim_id).find_element(By.CSS_SELECTOR, css))
        return True

    WebDriverWait(driver, WAIT_S, poll_frequency=0.1,
                  ignored_exceptions=[StaleElementReferenceException,
                                      ElementNotInteractableException]).until(attempt)


def type_into(field: Any, text: str) -> None:
    """Replace the field's text: a retried attempt must not append to a half-typed one."""
    field.clear()
    field.send_keys(text)


def pwned(driver: WebDriver) -> Any:
    return driver.execute_script("return window.__pwned;")


def test_page_shows_new_claims_and_renders_markup_as_inert_text(
    browser: WebDriver, gateway: GatewayServer, gateway_topics: GatewayTopics,
    kafka_bootstrap: str,
) -> None:
    prefix = uuid.uuid4().hex[:6]
    try:
        browser.get(gateway.url + "/")
    except WebDriverException as exc:  # pragma: no cover - diagnostics only
        pytest.fail(f"chromium could not load the page: {exc}")
    WebDriverWait(browser, WAIT_S, poll_frequency=0.2).until(
        lambda d: d.find_element(By.ID, "live-status").text.startswith("updated"))
    assert severe_logs(browser) == []
    assert browser.find_element(By.ID, "total-count").text == "0"

    # A claim submitted through the API shows up in the queue by itself (live refresh).
    unusual = {"claim_id": f"{prefix}-odd", "claim_amount": 480_000.0, "num_services": 60,
               "patient_age": 2, "provider_id": 14_210, "days_since_last_claim": 0}
    posted = httpx.post(f"{gateway.url}/api/v1/claims", json=unusual, timeout=30)
    assert posted.status_code == 201
    assert posted.json()["decision"] == "investigate"
    text, _ = row_view(browser, f"{prefix}-odd")
    assert f"{prefix}-odd" in text
    assert "v1" in text  # model version

    # A decision with markup in every free-text field, from another producer on the topic.
    hostile = hostile_decision(f"{prefix}-xss")
    publish(kafka_bootstrap, gateway_topics.investigate, hostile)
    text, tags = row_view(browser, f"{prefix}-xss", ("img", "script", "svg", "b"))
    assert PAYLOADS["message"] in text
    assert PAYLOADS["model"] in text
    assert PAYLOADS["version"] in text
    assert tags == {"img": 0, "script": 0, "svg": 0, "b": 0}
    assert browser.find_elements(By.ID, "pwned-model") == []
    assert pwned(browser) is None

    # Submitting through the page's form.
    form = browser.find_element(By.ID, "submit-form")
    values = {"claim_id": f"{prefix}-form", "claim_amount": "1250", "num_services": "3",
              "patient_age": "47", "provider_id": "14210", "days_since_last_claim": "32"}
    for name, value in values.items():
        form.find_element(By.NAME, name).send_keys(value)
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    result = WebDriverWait(browser, WAIT_S, poll_frequency=0.2).until(
        lambda d: d.find_element(By.ID, "submit-result").text)
    assert "approve" in result
    assert f"{prefix}-form" in result

    # CSV upload: each line's decision or error.
    csv_path = Path(tempfile.mkdtemp()) / "claims.csv"
    csv_path.write_text("claim_id,claim_amount,num_services,patient_age,provider_id,"
                        "days_since_last_claim\n"
                        f"{prefix}-c1,1100,2,50,14210,20\n"
                        f"{prefix}-c2,0,2,50,14210,20\n", encoding="utf-8")
    browser.find_element(By.ID, "csv-file").send_keys(str(csv_path))
    browser.find_element(By.CSS_SELECTOR, "#csv-form button[type=submit]").click()
    summary = WebDriverWait(browser, WAIT_S, poll_frequency=0.2).until(
        lambda d: "decided" in d.find_element(By.ID, "csv-summary").text
        and d.find_element(By.ID, "csv-summary").text)
    assert "1 decided, 1 rejected" in summary
    csv_rows = browser.find_elements(By.CSS_SELECTOR, "#csv-results tbody tr")
    assert "approve" in csv_rows[0].text
    assert "claim_amount" in csv_rows[1].text

    # Totals follow: two gateway claims + the hostile one + form + CSV line.
    WebDriverWait(browser, WAIT_S, poll_frequency=0.2).until(
        lambda d: d.find_element(By.ID, "total-count").text == "4")
    assert severe_logs(browser) == []

    # Lookup: a known claim, then markup typed by the investigator (echoed as text).
    lookup = browser.find_element(By.ID, "lookup-id")
    lookup.send_keys(f"{prefix}-xss")
    browser.find_element(By.CSS_SELECTOR, "#lookup-form button").click()
    found = WebDriverWait(browser, WAIT_S, poll_frequency=0.2).until(
        lambda d: d.find_element(By.ID, "lookup-result").text)
    assert PAYLOADS["message"] in found
    lookup.clear()
    lookup.send_keys(PAYLOADS["lookup"])
    browser.find_element(By.CSS_SELECTOR, "#lookup-form button").click()
    echoed = WebDriverWait(browser, WAIT_S, poll_frequency=0.2).until(
        lambda d: "failed" in d.find_element(By.ID, "lookup-result").text
        and d.find_element(By.ID, "lookup-result").text)
    assert PAYLOADS["lookup"] in echoed
    assert browser.find_elements(By.CSS_SELECTOR, "#lookup-result img") == []
    assert pwned(browser) is None
    # The refused lookup is a 422 that Chromium logs as a failed resource; nothing else.
    later = severe_logs(browser)
    assert all("Failed to load resource" in entry["message"] and "422" in entry["message"]
               for entry in later), later


def test_an_investigator_marks_a_queued_claim_with_a_note(
    browser: WebDriver, gateway_factory: Callable[..., GatewayServer], kafka_bootstrap: str,
    gateway_model: ModelServiceProcess, gateway_topics: GatewayTopics, labels_topic: str,
    group_id: str, stream_worker_factory: Callable[..., StreamWorker],
) -> None:
    stream_worker_factory(gateway_model.url).wait_assigned()
    gateway = gateway_factory(gateway_env(kafka_bootstrap, gateway_topics, group_id,
                                          GATEWAY_LABELS_TOPIC=labels_topic,
                                          GATEWAY_DECISION_TIMEOUT_S="30"))
    claim_id = f"{uuid.uuid4().hex[:6]}-odd"
    unusual = {"claim_id": claim_id, "claim_amount": 480_000.0, "num_services": 60,
               "patient_age": 2, "provider_id": 14_210, "days_since_last_claim": 0}
    assert httpx.post(f"{gateway.url}/api/v1/claims", json=unusual,
                      timeout=30).json()["decision"] == "investigate"
    browser.get(gateway.url + "/")
    WebDriverWait(browser, WAIT_S, poll_frequency=0.2,
                  ignored_exceptions=[StaleElementReferenceException]).until(
        lambda d: queue_row(d, claim_id).find_element(
            By.CSS_SELECTOR, "td.disposition .current").text == "open")

    # Without a name the page says so (and keeps saying it across refreshes), sends nothing.
    in_row(browser, claim_id, "button.set-needs_info", lambda button: button.click())
    WebDriverWait(browser, WAIT_S, poll_frequency=0.2,
                  ignored_exceptions=[StaleElementReferenceException]).until(
        lambda d: "enter your name" in queue_row(d, claim_id).text)

    note = '<img src=x onerror="window.__pwned=5">billed for a newborn'
    browser.find_element(By.ID, "investigator").send_keys("tester")
    in_row(browser, claim_id, "input.note", lambda field: type_into(field, note))
    in_row(browser, claim_id, "button.set-fraud", lambda button: button.click())

    # The label is on the topic, with the note as typed.
    [message] = consume_until(kafka_bootstrap, [labels_topic], 1, timeout_s=WAIT_S)
    label = Label.from_json(message.value() or b"")
    assert (label.claim_id, label.disposition, label.investigator, label.note) == (
        claim_id, "fraud", "tester", note)

    # The open queue (the default) drops the claim once the view has read the label; "all"
    # shows it with its disposition, the note as text.
    WebDriverWait(browser, WAIT_S, poll_frequency=0.2).until(
        lambda d: not d.find_elements(By.CSS_SELECTOR,
                                      f'#queue tbody tr[data-claim-id="{claim_id}"]'))
    Select(browser.find_element(By.ID, "queue-filter")).select_by_value("all")
    WebDriverWait(browser, WAIT_S, poll_frequency=0.2,
                  ignored_exceptions=[StaleElementReferenceException]).until(
        lambda d: f"fraud by tester: {note}" in queue_row(d, claim_id).text)
    text, tags = row_view(browser, claim_id, ("img",))
    assert "enter your name" not in text
    assert tags == {"img": 0}
    assert pwned(browser) is None
    assert severe_logs(browser) == []


def verdict(model: ModelRef, flagged: bool) -> ShadowVerdict:
    return ShadowVerdict(model=model, anomaly_score=0.6 if flagged else 0.4, threshold=0.5,
                         decision="investigate" if flagged else "approve")


def test_the_shadow_table_shows_agreement_and_precision_of_both_models(
    browser: WebDriver, gateway_factory: Callable[..., GatewayServer], kafka_bootstrap: str,
    gateway_topics: GatewayTopics, labels_topic: str, group_id: str,
    make_topic: Callable[..., str],
) -> None:
    shadow_topic = make_topic(partitions=1, prefix="shadow")
    gateway = gateway_factory(gateway_env(kafka_bootstrap, gateway_topics, group_id,
                                          GATEWAY_LABELS_TOPIC=labels_topic,
                                          GATEWAY_SHADOW_TOPIC=shadow_topic))
    browser.get(gateway.url + "/")
    WebDriverWait(browser, WAIT_S, poll_frequency=0.2).until(
        lambda d: d.find_element(By.ID, "live-status").text.startswith("updated"))
    assert browser.find_element(By.ID, "shadow-none").is_displayed()

    champion = ModelRef(name="claim-anomaly", version="3")
    challenger = ModelRef(name="claim-anomaly", version=PAYLOADS["version"])
    prefix = uuid.uuid4().hex[:6]
    # (champion flags, challenger flags, disposition): agreement 2/3; champion 1 fraud of 2
    # labelled, challenger 1 of 1.
    cases: list[tuple[bool, bool, Disposition | None]] = [
        (True, True, "fraud"), (True, False, "legitimate"), (False, False, None)]
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "enable.idempotence": True})
    for i, (champ, chall, disposition) in enumerate(cases):
        claim_id = f"{prefix}-{i}"
        record = ShadowScore(claim_id=claim_id, champion=verdict(champion, champ),
                             challenger=verdict(challenger, chall), agree=champ == chall,
                             decided_at=datetime.now(UTC),
                             source=StreamSource(topic="claims", partition=0, offset=i))
        producer.produce(shadow_topic, key=claim_id.encode(), value=record.to_json())
        if disposition is not None:
            decision = hostile_decision(claim_id)
            label = Label.answering(decision, disposition, investigator="tester",
                                    decided_at=datetime.now(UTC))
            producer.produce(labels_topic, key=claim_id.encode(), value=label.to_json())
    assert producer.flush(30) == 0

    row = WebDriverWait(browser, WAIT_S, poll_frequency=0.2,
                        ignored_exceptions=[StaleElementReferenceException]).until(
        lambda d: "66.7%" in d.find_element(By.CSS_SELECTOR, "#shadow tbody tr").text
        and d.find_element(By.CSS_SELECTOR, "#shadow tbody tr"))
    text = row.text
    assert "claim-anomaly v3" in text
    assert PAYLOADS["version"] in text  # markup in a model version is shown as text
    assert "50.0% (1 / 2)" in text
    assert "100.0% (1 / 1)" in text
    assert "100.0% (0 unseen)" in text  # the gate's bound: it flagged nothing unseen
    assert row.find_elements(By.TAG_NAME, "svg") == []
    assert pwned(browser) is None
    assert not browser.find_element(By.ID, "shadow-none").is_displayed()
    assert severe_logs(browser) == []
    api = httpx.get(f"{gateway.url}/api/v1/shadow", timeout=10).json()
    [pair] = api["pairs"]
    assert (pair["claims"], pair["agree"]) == (3, 2)
