"""Load test for Loanbook: the seed's locustfile (seeds/000, "Load Testing"), with sign-in.

Each simulated user signs in once (POST /v1/auth/token with LOCUST_EMAIL and
LOCUST_PASSWORD) and sends the access token as a Bearer header. Task weight 3 posts the
seed's payload to POST /loan/apply with a fresh Idempotency-Key and a distinct
applicant_name (so no request is a replay and none hits the per-applicant velocity
limit); task weight 1 reads GET /health. A response other than 201 (apply) or 200
(health) counts as a failure. See README.md beside this file for how to run it.
"""

import os
import sys
import uuid

from locust import HttpUser, between, task

EMAIL = os.environ.get("LOCUST_EMAIL")
PASSWORD = os.environ.get("LOCUST_PASSWORD")
if not EMAIL or not PASSWORD:
    sys.exit(
        "locustfile: set LOCUST_EMAIL and LOCUST_PASSWORD to a Loanbook user allowed to apply "
        "(e.g. a borrower: npm run loanbook -- user create --email ... --role borrower --password ...)"
    )

# Exactly the seed's payload; applicant_name is made distinct per request.
SEED_PAYLOAD = {
    "applicant_name": "Test User",
    "loan_amount": 250000,
    "monthly_income": 10000,
    "employment_years": 7,
    "credit_history": {"existing_loans": 2, "repayment_score": 0.92},
    "collateral_value": 350000,
    "company": "Microsoft",
}


class LoanApplicationUser(HttpUser):
    wait_time = between(1, 3)

    def on_start(self):
        self.sign_in()

    def sign_in(self):
        # A stale token must not ride along on the sign-in request.
        self.client.headers.pop("Authorization", None)
        with self.client.post(
            "/v1/auth/token",
            json={"email": EMAIL, "password": PASSWORD},
            name="/v1/auth/token",
            catch_response=True,
        ) as response:
            if response.status_code != 200:
                response.failure(f"sign-in failed: {response.status_code} {response.text[:200]}")
                return
            token = response.json()["access_token"]
            self.client.headers["Authorization"] = f"Bearer {token}"

    @task(3)
    def submit_loan_application(self):
        applicant = f"Test User {uuid.uuid4().hex}"
        with self.client.post(
            "/loan/apply",
            json={**SEED_PAYLOAD, "applicant_name": applicant},
            headers={"Idempotency-Key": str(uuid.uuid4())},
            name="/loan/apply",
            catch_response=True,
        ) as response:
            if response.status_code == 201:
                response.success()
            elif response.status_code == 401:
                # The access token expired (ACCESS_TOKEN_EXPIRE_MINUTES, 15 by default):
                # this request counts as failed; the next ones use a fresh token.
                response.failure("401: access token expired or revoked; signing in again")
                self.sign_in()
            else:
                response.failure(f"{response.status_code} {response.text[:200]}")

    @task(1)
    def check_health(self):
        with self.client.get("/health", name="/health", catch_response=True) as response:
            if response.status_code != 200:
                response.failure(f"{response.status_code} {response.text[:200]}")


# Run: locust -f deploy/locust/locustfile.py --headless -u 20 -r 5 -t 30s --host http://127.0.0.1:8000
