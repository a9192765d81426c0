"""TLS for the webhook without manual steps: a CA and serving certificate in a Secret, made
by the first replica that needs them, reissued before expiry, and the CA injected into the
webhook configuration.

Every replica runs `WebhookTLS.ensure` at start and twice a day: it reads the Secret (making
it if missing; a replica that loses the race reads the winner's), reissues the serving
certificate with a compare-and-swap when it is due, writes the PEM files the server reloads
on change, and sets the caBundle of every webhook of the configuration that lacks it.
"""

from __future__ import annotations

import base64
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from budgetops.crypto import webhookcerts
from budgetops.crypto.webhookcerts import Pair

log = logging.getLogger("budgetops.tls")

TRIES = 5


@dataclass(frozen=True)
class Served:
    """Where the server reads its certificate, and the CA the API server trusts."""

    cert_file: Path
    key_file: Path
    ca: bytes


def _b64(value: bytes) -> str:
    return base64.b64encode(value).decode()


def _write(path: Path, data: bytes) -> None:
    """Replace a file atomically (the server's reload must never read half a key)."""
    temporary = path.with_name(f".{path.name}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(data)
    temporary.replace(path)


class WebhookTLS:
    """The webhook's certificates for one Secret, Service and webhook configuration."""

    def __init__(
        self,
        api_client: client.ApiClient,
        *,
        namespace: str,
        secret: str,
        names: Sequence[str],
        configuration: str,
        folder: Path,
    ) -> None:
        self.core = client.CoreV1Api(api_client)
        self.admission = client.AdmissionregistrationV1Api(api_client)
        self.namespace = namespace
        self.secret = secret
        self.names = list(names)
        self.configuration = configuration
        self.folder = folder

    def ensure(self, now: datetime) -> Served:
        """Certificates good for at least RENEW_BEFORE, on disk and trusted by the API server."""
        for _ in range(TRIES):
            found = self._read()
            if found is None:
                ca = webhookcerts.new_ca(now)
                serving = webhookcerts.new_serving(ca, self.names, now)
                if not self._create(ca, serving):
                    continue  # another replica made it first: use theirs
                log.info("made the webhook CA and serving certificate in secret %s", self.secret)
            else:
                ca, serving, version = found
                why = webhookcerts.due(serving.cert, ca.cert, self.names, now)
                if why is not None:
                    renewed = webhookcerts.new_serving(ca, self.names, now)
                    if not self._replace(ca, renewed, version):
                        continue
                    log.info("reissued the webhook's serving certificate: %s", why)
                    serving = renewed
            return self._serve(ca, serving)
        raise RuntimeError(f"secret {self.namespace}/{self.secret} kept changing; try again")

    def _read(self) -> tuple[Pair, Pair, str] | None:
        try:
            secret = self.core.read_namespaced_secret(self.secret, self.namespace)
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        data = {k: base64.b64decode(v) for k, v in (secret.data or {}).items()}
        missing = {"ca.crt", "ca.key", "tls.crt", "tls.key"} - data.keys()
        if missing:
            raise ValueError(
                f"secret {self.namespace}/{self.secret} lacks {', '.join(sorted(missing))}: "
                "delete it to have BudgetOps make a new CA, or give it every key"
            )
        ca = Pair(data["ca.crt"], data["ca.key"])
        assert secret.metadata is not None
        return ca, Pair(data["tls.crt"], data["tls.key"]), str(secret.metadata.resource_version)

    def _body(self, ca: Pair, serving: Pair, version: str | None) -> client.V1Secret:
        return client.V1Secret(
            metadata=client.V1ObjectMeta(
                name=self.secret,
                namespace=self.namespace,
                resource_version=version,
                labels={"app.kubernetes.io/part-of": "budgetops"},
            ),
            type="kubernetes.io/tls",
            data={
                "ca.crt": _b64(ca.cert),
                "ca.key": _b64(ca.key),
                "tls.crt": _b64(serving.cert),
                "tls.key": _b64(serving.key),
            },
        )

    def _create(self, ca: Pair, serving: Pair) -> bool:
        try:
            self.core.create_namespaced_secret(self.namespace, self._body(ca, serving, None))
        except ApiException as error:
            if error.status == 409:
                return False
            raise
        return True

    def _replace(self, ca: Pair, serving: Pair, version: str) -> bool:
        try:
            self.core.replace_namespaced_secret(
                self.secret, self.namespace, self._body(ca, serving, version)
            )
        except ApiException as error:
            if error.status == 409:
                return False
            raise
        return True

    def _serve(self, ca: Pair, serving: Pair) -> Served:
        self.folder.mkdir(parents=True, exist_ok=True)
        served = Served(self.folder / "tls.crt", self.folder / "tls.key", ca.cert)
        _write(served.key_file, serving.key)
        _write(served.cert_file, serving.cert)
        self._inject(ca.cert)
        return served

    def _inject(self, ca: bytes) -> None:
        """Set the caBundle of each webhook of the configuration, where it differs. The
        patch holds only if the configuration is as read: when another replica (starting
        at the same time) or `helm upgrade` changed it first, it is read again."""
        bundle = _b64(ca)
        for _ in range(TRIES):
            try:
                configuration = self.admission.read_validating_webhook_configuration(
                    self.configuration
                )
            except ApiException as error:
                if error.status == 404:
                    log.warning(
                        "no ValidatingWebhookConfiguration %s to give the CA to", self.configuration
                    )
                    return
                raise
            assert configuration.metadata is not None
            patch = [
                {"op": "add", "path": f"/webhooks/{i}/clientConfig/caBundle", "value": bundle}
                for i, hook in enumerate(configuration.webhooks or [])
                if hook.client_config.ca_bundle != bundle
            ]
            if not patch:
                return
            patch.insert(
                0,
                {
                    "op": "test",
                    "path": "/metadata/resourceVersion",
                    "value": str(configuration.metadata.resource_version),
                },
            )
            try:
                self.admission.patch_validating_webhook_configuration(self.configuration, patch)
            except ApiException as error:
                if error.status in (409, 422):  # the test failed: changed since it was read
                    continue
                raise
            log.info("gave the webhook CA to %d webhooks of %s", len(patch) - 1, self.configuration)
            return
        raise RuntimeError(f"webhook configuration {self.configuration} kept changing; try again")
