"""The README's Python SDK example: run it from the repository root while `make dev` runs."""

import os

import wsched

url = os.environ.get("WSCHED_API_URL", "http://127.0.0.1:8080")
operator_key = os.environ.get("WSCHED_OPERATOR_KEY", "dev-operator-key")

with wsched.Client(url, api_key=operator_key) as operator:
    tenant = operator.tenants.create("acme")  # its API key is in this answer only

with wsched.Client(url, api_key=tenant.api_key) as client:
    client.applications.create("shop")
    client.pipelines.create("shop", "echo", chart="charts/examples/echo", wait_ready_s=120)
    tasks = client.tasks("shop", "echo")

    handle = tasks.submit({"message": "hello"})
    print(handle.result(timeout=60))  # hello: the echo chart prints its message

    batch = tasks.submit_many({"message": f"task {i}"} for i in range(100))
    print(batch.queued, "queued")  # 100 queued, in one request

    later = tasks.submit({"message": "later"}, delay="10m", expires_after="1h")
    print(later.status)  # scheduled
    later.cancel()

    try:
        tasks.submit({"message": "other"}, id=handle.id)
    except wsched.Conflict as error:
        print(error.error)  # task_conflict: that id holds other data
