"""Load-test a running rproxy with locust:

    pip install locust
    locust -f loadtests/locustfile.py --host http://127.0.0.1:8080

For comparable numbers against nginx use ``loadtests/bench.py`` (wrk, same
machine, same run); locust is for exercising a configuration with a mix of
requests a real site sees.
"""

from __future__ import annotations

from locust import FastHttpUser, between, task  # type: ignore[import-not-found]


class Visitor(FastHttpUser):  # type: ignore[misc]
    wait_time = between(0.0, 0.1)

    @task(10)
    def page(self) -> None:
        self.client.get("/")

    @task(3)
    def health(self) -> None:
        self.client.get("/healthz")

    @task(1)
    def upload(self) -> None:
        self.client.post("/app/upload", data=b"x" * 4096)
