"""The databases of one deployment, apart from access and audit: both, the release and the backups need only these."""

from __future__ import annotations


def databases(main: str) -> dict[str, str]:
    """healthcare_db -> healthcare_analytics, healthcare_doctor_app, healthcare_audit."""
    prefix = main.removesuffix("_db")
    return {"main": main, "analytics": f"{prefix}_analytics", "doctor_app": f"{prefix}_doctor_app",
            "audit": f"{prefix}_audit"}
