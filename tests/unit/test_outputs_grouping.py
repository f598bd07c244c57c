"""Which index an output object belongs to (a pure function of the keys and the templates)."""

from tasks.render.manifests import index_prefix
from tasks.spec import OutputsSpec
from tasks.stages.outputs import Listed, group_by_index


def test_objects_are_grouped_by_their_index_and_strays_are_reported() -> None:
    outputs = OutputsSpec()
    prefix = "ask-batch/r1/"
    keys = [Listed(index_prefix(outputs, prefix, i) + name, 1, None)
            for i in range(12) for name in ("result.json", "_SUCCESS")]
    keys.append(Listed(prefix + "stray.txt", 1, None))
    keys.append(Listed(prefix + "logs/pod-a.log", 1, None))
    groups, others = group_by_index(keys, outputs, prefix, 12)
    assert all(len(groups[i]) == 2 for i in range(12))
    assert groups[10][0].key.startswith(index_prefix(outputs, prefix, 10))
    assert others == [prefix + "stray.txt"]


def test_unpadded_templates_keep_index_1_and_10_apart() -> None:
    outputs = OutputsSpec(index_template="{index}/")
    prefix = "p/"
    keys = [Listed("p/1/a", 1, None), Listed("p/10/a", 1, None), Listed("p/10/b", 1, None)]
    groups, _ = group_by_index(keys, outputs, prefix, 11)
    assert [o.key for o in groups[1]] == ["p/1/a"]
    assert [o.key for o in groups[10]] == ["p/10/a", "p/10/b"]


def test_a_padding_too_narrow_for_the_job_still_finds_every_index() -> None:
    # index-{index:02d}/ runs in index order up to 99, then index-100/ sorts before index-11/: the search must
    # not trust index order there.
    outputs = OutputsSpec(index_template="index-{index:02d}/")
    indexes = (0, 5, 10, 99, 100, 101, 119)
    keys = [Listed(index_prefix(outputs, "p/", i) + "out", 1, None) for i in indexes]
    groups, others = group_by_index(keys, outputs, "p/", 120)
    assert {i: [o.key for o in objs] for i, objs in groups.items() if objs} == {
        i: [index_prefix(outputs, "p/", i) + "out"] for i in indexes}
    assert others == []
