#!/usr/bin/env python3
"""JSON Schemas (draft 2020-12) of OCSF event classes, compiled from the
official OCSF schema definitions (github.com/ocsf/ocsf-schema).

    python3 generate.py OCSF_SCHEMA_DIR [--ref refs/tags/v1.1.0] [--out DIR] [CLASS...]

OCSF_SCHEMA_DIR is a checkout (or a bare git directory, with --ref naming
the tag to read) of the ocsf-schema repository. One file per class is
written to DIR (default: ./<version>/<class>.json), each self-contained:
the objects it references are in its "$defs".

How the definitions become JSON Schema (as the OCSF server compiles a
class, and as its JSON-schema export and validator read the result):

* an event class or object is its `extends` chain merged parent first, the
  child's attributes over its parent's; `$include`d files (includes/*,
  profiles/*) merge in before the file's own attributes, an attribute from
  a profile remembering its profile;
* each attribute is the dictionary's definition with the class's or
  object's refinements over it; enums merge (the dictionary's 0 Unknown and
  99 Other beside the class's own values);
* types: a dictionary type (string_t, hostname_t, port_t, ...) becomes
  its JSON type with its `regex` (pattern), `max_len` (maxLength) and
  `range` (minimum/maximum); an object type becomes a $ref to its $defs
  entry; `is_array` becomes an array of it; json_t is any value and the
  `object` type (unmapped) any JSON object;
* an integer enum becomes `enum` of its ids; `class_uid` and
  `category_uid` are the class's own (const), `type_uid` is class_uid*100
  plus an activity id;
* `requirement: required` becomes `required`; the attributes of a profile
  are required only when the event names the profile in
  `metadata.profiles` (if/then); constraints `at_least_one` and `just_one`
  become anyOf/oneOf of required; classes and objects admit no other
  attributes (additionalProperties false) but the free-form `unmapped`.

* `observable.type_id` enumerates the observable ids the dictionary's
  types and the objects declare.

The datetime profile's generated *_dt siblings and the extensions (linux,
windows) are not compiled: this is the core schema, and vigil emits
neither.
"""

import argparse
import json
import os
import subprocess
import sys

DEFAULT_CLASSES = ["detection_finding", "compliance_finding", "entity_management"]


class Source:
    """Reads the schema's files from a directory or a git ref."""

    def __init__(self, root, ref):
        self.root = root
        self.ref = ref
        if ref:
            out = subprocess.run(
                ["git", "-C", root, "ls-tree", "-r", "--name-only", ref],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            self.files = out.split()
        else:
            self.files = []
            for d, _, names in os.walk(root):
                for n in names:
                    rel = os.path.relpath(os.path.join(d, n), root)
                    self.files.append(rel.replace(os.sep, "/"))

    def read(self, path):
        if self.ref:
            text = subprocess.run(
                ["git", "-C", self.root, "show", f"{self.ref}:{path}"],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
        else:
            with open(os.path.join(self.root, path), encoding="utf-8") as f:
                text = f.read()
        return json.loads(text)

    def under(self, folder):
        return sorted(
            p
            for p in self.files
            if p.startswith(folder + "/") and p.endswith(".json")
        )


def deep_merge(base, over):
    """`over` merged into a copy of `base`, dictionaries key by key."""
    if not isinstance(base, dict) or not isinstance(over, dict):
        return over
    out = dict(base)
    for k, v in over.items():
        out[k] = deep_merge(base[k], v) if k in base else v
    return out


class Schema:
    def __init__(self, src):
        self.src = src
        self.dictionary = src.read("dictionary.json")
        self.types = self.dictionary["types"]["attributes"]
        self.categories = src.read("categories.json")["attributes"]
        self.version = src.read("version.json")["version"]
        self.objects = {}
        for p in src.under("objects"):
            o = src.read(p)
            self.objects[o["name"]] = o
        self.events = {}
        for p in src.under("events"):
            e = src.read(p)
            self.events[e["name"]] = e
        # The observable type ids: the dictionary's types and the objects
        # that name one (the OCSF server builds observable.type_id's enum
        # from them).
        self.observable_ids = {
            str(d["observable"]): {"caption": d.get("caption", n)}
            for n, d in list(self.types.items()) + list(self.objects.items())
            if "observable" in d
        }
        self._resolved = {}

    def own_attributes(self, item):
        """The item's attributes with its $includes merged under them."""
        attrs = {}
        for path in item.get("attributes", {}).get("$include", []):
            inc = self.src.read(path)
            profile = inc.get("name") if inc.get("meta") == "profile" else None
            for k, v in inc.get("attributes", {}).items():
                if k == "$include":
                    continue
                v = dict(v)
                if profile:
                    v["profile"] = profile
                attrs[k] = deep_merge(attrs.get(k, {}), v)
        for k, v in item.get("attributes", {}).items():
            if k == "$include":
                continue
            attrs[k] = deep_merge(attrs.get(k, {}), v)
        return attrs

    def resolve(self, kind, name):
        """(attributes, constraints, profiles, item) of a class or object
        with its extends chain merged."""
        key = (kind, name)
        if key in self._resolved:
            return self._resolved[key]
        table = self.events if kind == "event" else self.objects
        item = table[name]
        parent = item.get("extends")
        if parent and parent != "object" and parent in table:
            attrs, constraints, profiles, _ = self.resolve(kind, parent)
            attrs = dict(attrs)
        else:
            attrs, constraints, profiles = {}, None, []
        for k, v in self.own_attributes(item).items():
            attrs[k] = deep_merge(attrs.get(k, {}), v)
        # An item's own constraints, even none ({}), replace its parent's.
        if "constraints" in item:
            constraints = item["constraints"]
        profiles = sorted(set(profiles) | set(item.get("profiles", [])))
        out = (attrs, constraints, profiles, item)
        self._resolved[key] = out
        return out

    def attribute(self, name, refinement):
        base = self.dictionary["attributes"].get(name)
        if base is None:
            sys.exit(f"attribute {name} is not in the dictionary")
        return deep_merge(base, refinement)

    def scalar(self, type_name):
        """JSON Schema of a dictionary type."""
        if type_name == "json_t":
            return {}
        if type_name == "object":
            return {"type": "object"}
        t = self.types.get(type_name)
        if t is None:
            sys.exit(f"unknown type {type_name}")
        base = t.get("type", type_name)
        out = dict(self.scalar(base)) if base != type_name else {}
        primitive = {
            "string_t": "string",
            "integer_t": "integer",
            "long_t": "integer",
            "float_t": "number",
            "boolean_t": "boolean",
        }
        if type_name in primitive:
            out["type"] = primitive[type_name]
        if "regex" in t:
            out["pattern"] = t["regex"]
        if "max_len" in t:
            out["maxLength"] = t["max_len"]
        if "range" in t:
            out["minimum"], out["maximum"] = t["range"]
        return out

    def encode_attribute(self, name, attr, refs, class_ctx=None):
        t = attr["type"]
        if t == "object":
            # The generic object (unmapped): any JSON object.
            s = {"type": "object"}
        elif t in self.objects:
            refs.add(t)
            s = {"$ref": f"#/$defs/{t}"}
        else:
            s = self.scalar(t)
            if class_ctx and name == "class_uid":
                s["const"] = class_ctx["class_uid"]
            elif class_ctx and name == "category_uid":
                s["const"] = class_ctx["category_uid"]
            elif class_ctx and name == "type_uid":
                s["enum"] = [class_ctx["class_uid"] * 100 + a for a in class_ctx["activities"]]
            elif "enum" in attr:
                ids = sorted(attr["enum"].keys(), key=lambda k: (len(k), k))
                if s.get("type") == "integer":
                    s["enum"] = sorted(int(k) for k in ids)
                else:
                    s["enum"] = ids
        if attr.get("is_array"):
            s = {"type": "array", "items": s}
        if attr.get("caption"):
            s = {"title": attr["caption"], **s}
        return s

    def encode(self, kind, name, refs, class_ctx=None):
        attrs, constraints, _, item = self.resolve(kind, name)
        attrs = dict(attrs)
        properties = {}
        required = []
        by_profile = {}
        for k in sorted(attrs):
            a = self.attribute(k, attrs[k])
            if kind == "object" and name == "observable" and k == "type_id":
                a["enum"] = {**a.get("enum", {}), **self.observable_ids}
            if class_ctx and k == "activity_id":
                class_ctx["activities"] = sorted(int(i) for i in a.get("enum", {}))
            properties[k] = None  # keep the order; filled below
            if a.get("requirement") == "required":
                if a.get("profile"):
                    by_profile.setdefault(a["profile"], []).append(k)
                else:
                    required.append(k)
            attrs[k] = a
        for k in properties:
            properties[k] = self.encode_attribute(k, attrs[k], refs, class_ctx)
        s = {"title": item.get("caption", name), "type": "object"}
        s["properties"] = properties
        s["additionalProperties"] = False
        if required:
            s["required"] = required
        all_of = []
        for profile, names in sorted(by_profile.items()):
            if not class_ctx:
                # An object's profile attributes are never required here:
                # no object vigil emits has a required profile attribute.
                continue
            all_of.append(
                {
                    "if": {
                        "required": ["metadata"],
                        "properties": {
                            "metadata": {
                                "required": ["profiles"],
                                "properties": {"profiles": {"contains": {"const": profile}}},
                            }
                        },
                    },
                    "then": {"required": names},
                }
            )
        if constraints:
            if constraints.get("at_least_one"):
                all_of.append(
                    {"anyOf": [{"required": [a]} for a in constraints["at_least_one"]]}
                )
            if constraints.get("just_one"):
                all_of.append({"oneOf": [{"required": [a]} for a in constraints["just_one"]]})
        if all_of:
            s["allOf"] = all_of
        return s

    def class_schema(self, name):
        item = self.events[name]
        up = item
        while "category" not in up:
            up = self.events[up["extends"]]
        category = self.categories[up["category"]]
        class_uid = category["uid"] * 1000 + item["uid"]
        ctx = {"class_uid": class_uid, "category_uid": category["uid"], "activities": []}
        refs = set()
        # activity_id is encoded before type_uid (sorted), which needs it.
        body = self.encode("event", name, refs, ctx)
        body["properties"]["type_uid"] = self.encode_attribute(
            "type_uid", self.attribute("type_uid", {}), refs, ctx
        )
        defs = {}
        pending = sorted(refs)
        while pending:
            o = pending.pop()
            if o in defs:
                continue
            more = set()
            defs[o] = self.encode("object", o, more)
            pending.extend(sorted(more - set(defs)))
        return {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": f"https://schema.ocsf.io/{self.version}/classes/{name}",
            **body,
            "$defs": dict(sorted(defs.items())),
        }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("schema_dir")
    ap.add_argument("--ref", help="git ref to read, e.g. refs/tags/v1.1.0")
    ap.add_argument("--out", default=None)
    ap.add_argument("classes", nargs="*", default=DEFAULT_CLASSES)
    args = ap.parse_args()
    schema = Schema(Source(args.schema_dir, args.ref))
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), schema.version)
    os.makedirs(out, exist_ok=True)
    for name in args.classes:
        s = schema.class_schema(name)
        path = os.path.join(out, f"{name}.json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(s, f, indent=1, sort_keys=False, ensure_ascii=False)
            f.write("\n")
        print(f"{path}: {len(s['$defs'])} objects")


if __name__ == "__main__":
    main()
