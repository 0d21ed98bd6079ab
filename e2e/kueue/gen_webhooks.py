#!/usr/bin/env python3
"""Rewrite an upstream kubebuilder webhook manifest for a manager that runs as a host process.

usage: gen_webhooks.py MANIFESTS PREFIX URLBASE CA.crt KEEP_NAMES(comma) [pod]

Keeps only the webhooks named, replaces `clientConfig.service` by `url` + `caBundle` (loopback, no
Service needed) and renames the configurations PREFIX-{mutating,validating}-webhook-configuration.
With `pod`, the pod webhooks get the objectSelector that JobSet's kustomize overlay adds, so only
JobSet pods go through them.
"""

import base64
import sys

import yaml


def main(argv: list[str]) -> None:
    src, prefix, urlbase, ca, keep_csv = argv[1:6]
    pod_selector = len(argv) > 6 and argv[6] == "pod"
    keep = set(keep_csv.split(","))
    with open(ca, "rb") as f:
        ca_bundle = base64.b64encode(f.read()).decode()
    out = []
    with open(src) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    for doc in docs:
        suffix = "-mutating" if doc["kind"].startswith("Mutating") else "-validating"
        doc["metadata"] = {"name": f"{prefix}{suffix}-webhook-configuration"}
        hooks = []
        for hook in doc["webhooks"]:
            if hook["name"] not in keep:
                continue
            hook["clientConfig"] = {"url": urlbase + hook["clientConfig"]["service"]["path"], "caBundle": ca_bundle}
            if pod_selector and hook["name"] in ("mpod.kb.io", "vpod.kb.io"):
                hook["objectSelector"] = {
                    "matchExpressions": [{"key": "jobset.sigs.k8s.io/jobset-name", "operator": "Exists"}]
                }
            hook.setdefault("timeoutSeconds", 10)
            hooks.append(hook)
        doc["webhooks"] = hooks
        out.append(doc)
    yaml.safe_dump_all(out, sys.stdout, sort_keys=False)


if __name__ == "__main__":
    main(sys.argv)
