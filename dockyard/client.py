"""A Python client of the /v1 API (httpx), used by `dockyard registries`."""

from __future__ import annotations

from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx


class ClientError(Exception):
    """The server refused the request; `errors` are its sentences."""

    def __init__(self, status: int, errors: list[str]) -> None:
        super().__init__(f"HTTP {status}: " + "; ".join(errors))
        self.status = status
        self.errors = errors


class DockyardClient:
    def __init__(self, url: str, token: str, *, timeout: float = 30.0) -> None:
        self._http = httpx.Client(
            base_url=url.rstrip("/"),
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
            timeout=timeout,
        )

    def __enter__(self) -> DockyardClient:
        return self

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _value: BaseException | None,
        _tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        return self._payload(self._http.request(method, path, json=body))

    @staticmethod
    def _payload(response: httpx.Response) -> Any:
        try:
            payload = response.json()
        except ValueError:
            payload = None
        if response.is_error:
            errors = payload.get("errors") if isinstance(payload, dict) else None
            raise ClientError(response.status_code, errors or [response.reason_phrase])
        return payload

    def list_registries(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("GET", "/v1/container_registries")[
            "container_registries"
        ]
        return result

    def get_registry(self, registry_id: str) -> dict[str, Any]:
        return self._one("GET", f"/v1/container_registries/{registry_id}")

    def create_registry(self, **fields: Any) -> dict[str, Any]:
        return self._one("POST", "/v1/container_registries", fields)

    def update_registry(self, registry_id: str, **fields: Any) -> dict[str, Any]:
        return self._one("PATCH", f"/v1/container_registries/{registry_id}", fields)

    def delete_registry(self, registry_id: str) -> dict[str, Any]:
        return self._one("DELETE", f"/v1/container_registries/{registry_id}")

    def generate_credentials(
        self, registry_id: str, *, expires_in: int | None = None
    ) -> dict[str, Any]:
        body = None if expires_in is None else {"expires_in": expires_in}
        return self._one("POST", f"/v1/container_registries/{registry_id}/credentials", body)

    def rotate_credentials(self, registry_id: str, **fields: Any) -> dict[str, Any]:
        """`grace_period` and `expires_in` (seconds) as the API takes them, when given."""
        return self._one(
            "POST", f"/v1/container_registries/{registry_id}/credentials/rotate", fields
        )

    def revoke_credentials(self, registry_id: str) -> dict[str, Any]:
        return self._one("DELETE", f"/v1/container_registries/{registry_id}/credentials")

    def list_regions(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("GET", "/v1/regions")["regions"]
        return result

    def list_repositories(
        self, registry_id: str, page: int = 1, per_page: int = 25
    ) -> dict[str, Any]:
        """The page: `repositories`, `storage_used_bytes` and `meta`."""
        path = f"/v1/container_registries/{registry_id}/repositories"
        return self._page(path, page, per_page)

    def list_tags(
        self, registry_id: str, name: str, page: int = 1, per_page: int = 25
    ) -> dict[str, Any]:
        """The page: `repository`, `tags` and `meta`."""
        return self._page(self._repository(registry_id, name) + "/tags", page, per_page)

    def delete_tag(self, registry_id: str, name: str, tag: str) -> dict[str, Any]:
        path = f"{self._repository(registry_id, name)}/tags/{quote(tag, safe='')}"
        result: dict[str, Any] = self._call("DELETE", path)["tag"]
        return result

    def delete_repository(self, registry_id: str, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("DELETE", self._repository(registry_id, name))[
            "repository"
        ]
        return result

    @staticmethod
    def _repository(registry_id: str, name: str) -> str:
        # Slashes encoded twice: the one spelling that works for every name (see README).
        twice = quote(quote(name, safe=""), safe="")
        return f"/v1/container_registries/{registry_id}/repositories/{twice}"

    def _page(self, path: str, page: int, per_page: int) -> dict[str, Any]:
        response = self._http.get(path, params={"page": page, "per_page": per_page})
        result: dict[str, Any] = self._payload(response)
        return result

    def _one(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        result: dict[str, Any] = self._call(method, path, body)["container_registry"]
        return result
