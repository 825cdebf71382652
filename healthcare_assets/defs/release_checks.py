"""The five checks on what a run is about to release; the same verdicts serve the audit of the whole copy."""

from dataclasses import dataclass

import dagster as dg

from healthcare_assets.defs import verdicts
from healthcare_assets.domain import privacy
from healthcare_assets.domain.release.findings import Findings
from healthcare_assets.plumbing import settings

CHECKS = {
    "view_fields_are_allow_listed": "every released document has exactly the allow-listed fields",
    "no_source_name_in_view": "no patient, doctor or hospital name from the source appears in what is released",
    "quasi_identifiers_are_generalized": "every quasi-identifier is released at its scheme's level (a band, a "
                                         "span of years, a category or *), every sensitive value from its set",
    "k_anonymity_at_least_11": "every group released, and every increment added to one, holds at least 11 "
                               "distinct patients",
    "no_sensitive_value_over_half": "in every group released, and every increment added to one, no value of a "
                                    "sensitive field makes up more than half of the stays",
}


@dataclass(frozen=True)
class Outcome:
    passed: bool
    metadata: dict


POLICY = "healthcare_assets/domain/privacy.py"


def check_results(findings: Findings, k: Outcome, share: Outcome,
                  page: verdicts.RunPage | None = None) -> list[dg.AssetCheckResult]:
    """The five checks on what is about to be released; a failed one marks the run's page blocked."""
    not_generalized = {name: n for name, n in findings.not_generalized.items() if n}
    look_at = page.path if page else settings.reports_dir() / "release_report.json"
    kept_apart = k.metadata.get("earlier_stays_not_as_remembered", 0)
    checks = [
        ("view_fields_are_allow_listed", not findings.wrong_fields,
         {"unexpected_or_missing_fields": dict(findings.wrong_fields)},
         f"{sum(findings.wrong_fields.values()):,} fields released are outside the allow-list or missing",
         "every document has exactly the allow-listed fields", f"none: VIEW_FIELDS in {POLICY}"),
        ("no_source_name_in_view", findings.leaks == 0,
         {"names_checked": findings.names_checked, "leaks": findings.leaks},
         f"{findings.leaks:,} source names (of {findings.names_checked:,} checked) appear in what would be released",
         "none may", verdicts.FIXED),
        ("quasi_identifiers_are_generalized", not not_generalized, {"not_generalized": not_generalized},
         (f"{sum(not_generalized.values()):,} values of {', '.join(not_generalized) or 'no field'} are not at "
          "their scheme's level"), "every one must be", f"none: the schemes in {POLICY}"),
        ("k_anonymity_at_least_11", k.passed, k.metadata,
         f"the weakest set of stays released together reaches {k.metadata.get('k_reached_patients')} distinct "
         f"patients" + (f" and {kept_apart:,} earlier stays are not as remembered" if kept_apart else ""),
         f"at least {privacy.K_ANONYMITY}", f"none: K_ANONYMITY in {POLICY}"),
        ("no_sensitive_value_over_half", share.passed, share.metadata,
         f"one sensitive value makes up {verdicts.percent(share.metadata['largest_share'])} of a released set",
         f"at most {verdicts.percent(privacy.MAX_SHARE)}", f"none: MAX_SHARE in {POLICY}"),
    ]
    return [verdicts.verdict(name, passed, metadata, verdicts.Why(figure, limit, setting, look_at), page)
            for name, passed, metadata, figure, limit, setting in checks]


def k_and_share(k: int, share: float, released: int, extra: dict) -> tuple[Outcome, Outcome]:
    """The two group checks over `released` sets of stays (groups, or increments) released together."""
    ok = not released
    return (Outcome(ok or k >= privacy.K_ANONYMITY, {"k_reached_patients": k, "released_together": released, **extra}),
            Outcome(ok or share <= privacy.MAX_SHARE, {"largest_share": round(share, 4), "limit": privacy.MAX_SHARE,
                                                       "sensitive_fields": list(privacy.SENSITIVE)}))
