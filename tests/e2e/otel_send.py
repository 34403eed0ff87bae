"""Sends log records to Sluice with the OpenTelemetry Python SDK and its
OTLP exporters, as an instrumented application does, and prints what
happened as JSON:

  {"results": ["SUCCESS", ...], "trace_ids": ["4bf9…", ...]}

Usage: otel_send.py --protocol grpc|http --endpoint URL [--ca FILE]
       [--token T] --namespace NS --service NAME --count N --tag TAG

Each record is logged through Python's `logging` (the SDK's
LoggingHandler) inside a span, so it carries that span's trace and span
ids; the level alternates error / warning; every record has the
attributes `user` and `tag`; the last one is logged with a traceback
(`logger.exception`)."""

import argparse
import json
import logging

from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider


class Recording:
    """The exporter, keeping what each export returned."""

    def __init__(self, inner):
        self.inner = inner
        self.results = []

    def export(self, batch):
        result = self.inner.export(batch)
        self.results.append(result.name)
        return result

    def shutdown(self):
        self.inner.shutdown()

    def force_flush(self, timeout_millis=30000):
        return True


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--protocol", choices=["grpc", "http", "http-json"], required=True)
    p.add_argument("--endpoint", required=True)
    p.add_argument("--ca")
    p.add_argument("--token")
    p.add_argument("--namespace", required=True)
    p.add_argument("--service", required=True)
    p.add_argument("--count", type=int, default=3)
    p.add_argument("--tag", required=True)
    a = p.parse_args()

    headers = {"authorization": f"Bearer {a.token}"} if a.token else None
    if a.protocol == "http-json":
        return send_json(a, headers)
    if a.protocol == "grpc":
        import grpc
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter

        credentials = None
        if a.ca:
            with open(a.ca, "rb") as f:
                credentials = grpc.ssl_channel_credentials(root_certificates=f.read())
        exporter = OTLPLogExporter(
            endpoint=a.endpoint,
            insecure=a.endpoint.startswith("http://"),
            credentials=credentials,
            headers=headers,
            timeout=5,
        )
    else:
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter

        exporter = OTLPLogExporter(
            endpoint=a.endpoint, certificate_file=a.ca, headers=headers, timeout=5
        )
    recording = Recording(exporter)
    resource = Resource.create(
        {
            "service.namespace": a.namespace,
            "deployment.environment.name": "prod",
            "service.name": a.service,
            "service.instance.id": "1",
        }
    )
    provider = LoggerProvider(resource=resource)
    provider.add_log_record_processor(SimpleLogRecordProcessor(recording))
    tracer = TracerProvider(resource=resource).get_tracer("otel_send")
    logger = logging.getLogger("app.orders")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(LoggingHandler(level=logging.INFO, logger_provider=provider))

    trace_ids = []
    for i in range(a.count):
        with tracer.start_as_current_span(f"batch {i}") as span:
            trace_ids.append(format(span.get_span_context().trace_id, "032x"))
            extra = {"user": "bob", "tag": a.tag}
            if i == a.count - 1:
                try:
                    1 / 0
                except ZeroDivisionError:
                    logger.exception("batch %d crashed %s", i, a.tag, extra=extra)
            elif i % 2 == 0:
                logger.error("batch %d failed %s", i, a.tag, extra=extra)
            else:
                logger.warning("batch %d slow %s", i, a.tag, extra=extra)
    provider.shutdown()
    print(json.dumps({"results": recording.results, "trace_ids": trace_ids}))


def send_json(a, headers):
    """One record in OTLP/JSON (the SDK sends protobuf only), written by
    hand as the specification spells it, POSTed twice: a client that lost
    the first answer."""
    import ssl
    import time
    import urllib.error
    import urllib.request

    attrs = lambda d: [{"key": k, "value": {"stringValue": v}} for k, v in d.items()]
    body = {
        "resourceLogs": [
            {
                "resource": {
                    "attributes": attrs(
                        {
                            "service.namespace": a.namespace,
                            "deployment.environment.name": "prod",
                            "service.name": a.service,
                        }
                    )
                },
                "scopeLogs": [
                    {
                        "scope": {"name": "json"},
                        "logRecords": [
                            {
                                "timeUnixNano": str(time.time_ns()),
                                "severityNumber": 17,
                                "severityText": "ERROR",
                                "body": {"stringValue": f"json record {a.tag}"},
                                "traceId": "5b8efff798038103d269b633813fc60c",
                                "spanId": "eee19b7ec3c1b174",
                                "attributes": attrs({"user": "bob", "tag": a.tag}),
                            }
                        ],
                    }
                ],
            }
        ]
    }
    data = json.dumps(body).encode()
    context = ssl.create_default_context(cafile=a.ca) if a.ca else None
    results = []
    for _ in range(2):
        request = urllib.request.Request(
            a.endpoint,
            data=data,
            headers={"Content-Type": "application/json", **(headers or {})},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, context=context, timeout=10) as r:
                results.append("SUCCESS" if r.status == 200 else f"FAILURE {r.status}")
        except urllib.error.HTTPError as e:
            results.append(f"FAILURE {e.code} {e.read().decode(errors='replace')}")
        except Exception as e:  # a refused handshake, a reset connection
            results.append(f"FAILURE {type(e).__name__}")
    print(json.dumps({"results": results, "trace_ids": ["5b8efff798038103d269b633813fc60c"]}))


if __name__ == "__main__":
    main()
