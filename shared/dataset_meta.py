"""Identity and size of a dataset without scanning it: for content keys and progress bars."""

from __future__ import annotations

from shared import store


def dataset_id(uri: str) -> str:
    """A content key for a dataset: its manifest when it has one, else its shard names and sizes."""
    m = store.read_manifest(uri)
    if m is not None:
        # the integrity record describes the files, not the data: a dataset keeps its id when it is added
        return store.content_key({k: v for k, v in m.items() if k not in ("created_at", "integrity")})
    fs, path = store.resolve(uri)
    import pyarrow.fs as pafs

    infos = fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
    listing = sorted((i.path[len(path) :], i.size) for i in infos if i.type == pafs.FileType.File)
    if not listing:
        raise FileNotFoundError(
            f"dataset {uri} is missing or empty: expected Parquet shards, tar shards or class folders"
        )
    return store.content_key(listing)


def split_size(uri: str, split: str) -> int | None:
    """Images in a split, from the dataset manifest or Parquet footers; None when unknown."""
    m = store.read_manifest(uri)
    if m is not None:
        for key in ("counts", "splits", "num_images"):
            v = m.get(key)
            if isinstance(v, dict) and split in v:
                val = v[split]
                return int(val["images"] if isinstance(val, dict) else val)
    try:
        from shared.datasets import detect_layout, list_shards

        if detect_layout(uri) == "parquet":
            import pyarrow.parquet as pq

            total = 0
            for shard in list_shards(uri, split, "parquet"):
                fs, path = store.resolve(shard)
                total += pq.ParquetFile(fs.open_input_file(path)).metadata.num_rows
            return total
    except Exception:  # size is only for progress display
        return None
    return None
