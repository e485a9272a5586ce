#!/usr/bin/env python3
"""Compares the vendored schemas (1.1.0/*.json, made by generate.py) with
the OCSF server's own compiled 1.1.0 schema, as the PyPI package
`ocsf-json-schema` ships it (ocsf_json_schema/ocsf/1.1.0.json):

    python3 -m venv /tmp/v && /tmp/v/bin/pip install ocsf-json-schema
    /tmp/v/bin/python controlplane/ocsf-schema/crosscheck.py

For each class and each object in its $defs: the same attributes, the same
required ones (profile attributes apart), the same types, arrays, object
references, integer enums and at_least_one/just_one constraints. Prints the
differences and exits 1 on any but those the server's extensions cause (the
linux extension's process attributes, the windows registry observables),
which the vendored core schema leaves out.
"""

import glob
import json
import os
import sys

import ocsf_json_schema

HERE = os.path.dirname(os.path.abspath(__file__))
SERVER = os.path.join(os.path.dirname(ocsf_json_schema.__file__), "ocsf", "1.1.0.json")
# What the linux and windows extensions add in the server's export.
FROM_EXTENSIONS = {
    ("process", "attributes", ("auid", "egid", "euid", "group")),
    ("observable", "type_id", (28, 29)),
}
PRIMITIVE = {
    "boolean_t": "boolean",
    "integer_t": "integer",
    "float_t": "number",
    "long_t": "integer",
    "string_t": "string",
}


def main():
    ref = json.load(open(SERVER, encoding="utf-8"))
    types = ref["types"]
    differences = []

    def expected_type(attr):
        t = attr["type"]
        if t == "object_t":
            return ("ref", attr["object_type"])
        if t == "json_t":
            return ("any",)
        return ("scalar", PRIMITIVE[t if t in PRIMITIVE else types[t]["type"]])

    def actual_type(prop):
        if "$ref" in prop:
            return ("ref", prop["$ref"].split("/")[-1])
        if prop.get("type") == "object" and "properties" not in prop:
            return ("ref", "object")
        if "type" not in prop:
            return ("any",)
        return ("scalar", prop["type"])

    def compare(label, obj_name, server, mine, is_class):
        attrs = {
            k: v
            for k, v in server["attributes"].items()
            if v.get("profile") != "datetime" and not k.endswith("_dt")
        }
        props = mine["properties"]
        only_server = tuple(sorted(set(attrs) - set(props)))
        if only_server and (obj_name, "attributes", only_server) not in FROM_EXTENSIONS:
            differences.append(f"{label}: only in the server's: {only_server}")
        if set(props) - set(attrs):
            differences.append(f"{label}: only vendored: {sorted(set(props) - set(attrs))}")
        required = {
            k for k, v in attrs.items() if v.get("requirement") == "required" and not v.get("profile")
        }
        if required != set(mine.get("required", [])):
            differences.append(f"{label}: required differ: {sorted(required ^ set(mine.get('required', [])))}")
        if is_class:
            by_profile = {
                k for k, v in attrs.items() if v.get("requirement") == "required" and v.get("profile")
            }
            mine_profile = set()
            for a in mine.get("allOf", []):
                mine_profile |= set(a.get("then", {}).get("required", []))
            if by_profile != mine_profile:
                differences.append(f"{label}: profile-required differ: {sorted(by_profile ^ mine_profile)}")
        for k in sorted(set(attrs) & set(props)):
            a, p = attrs[k], props[k]
            is_array = a.get("is_array", False)
            if is_array != (p.get("type") == "array"):
                differences.append(f"{label}.{k}: array or not differs")
                continue
            q = p["items"] if is_array else p
            if expected_type(a) != actual_type(q):
                differences.append(f"{label}.{k}: type {expected_type(a)} vs {actual_type(q)}")
            if "enum" in a and expected_type(a) == ("scalar", "integer"):
                want = sorted(int(x) for x in a["enum"])
                got = sorted(q["enum"]) if "enum" in q else [q.get("const")]
                extra = tuple(sorted(set(want) - set(got)))
                if (set(got) - set(want)) or (
                    extra and (obj_name, k, extra) not in FROM_EXTENSIONS
                ):
                    differences.append(f"{label}.{k}: enum {want} vs {got}")
        constraints = server.get("constraints") or {}
        for key, keyword in (("at_least_one", "anyOf"), ("just_one", "oneOf")):
            want = sorted(constraints.get(key) or [])
            got = sorted(
                r["required"][0] for a in mine.get("allOf", []) for r in a.get(keyword, [])
            )
            if want != got:
                differences.append(f"{label}: {key} {want} vs {got}")

    for path in sorted(glob.glob(os.path.join(HERE, "1.1.0", "*.json"))):
        mine = json.load(open(path, encoding="utf-8"))
        name = os.path.basename(path)[: -len(".json")]
        compare(name, name, ref["classes"][name], mine, True)
        for obj, schema in mine["$defs"].items():
            compare(f"{name}/$defs/{obj}", obj, ref["objects"][obj], schema, False)
    for d in differences:
        print(d)
    print(f"{len(differences)} differences beyond the extensions'")
    sys.exit(1 if differences else 0)


if __name__ == "__main__":
    main()
