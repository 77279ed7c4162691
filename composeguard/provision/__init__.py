"""``composeguard provision SERVICE... [--apply]``: give each data folder of the services a ZFS
dataset or Btrfs subvolume of its own, at exactly the same path, so that an upgrade snapshots
and restores it whole and alone (the fast, simple layout), with the record size its workload
wants set before any data is written into it.

Per folder, in order, every step journaled before it runs: the containers that use anything
under (or above) the folder are stopped, the folder is renamed aside in its own dataset, the
new dataset is created at the path, the data copied in (reflink on Btrfs; on ZFS a copy, block
cloning where the pool has it), the copy compared with the original field by field, the
containers started again, and only then the original deleted (``--keep-old`` keeps it).
Killed anywhere, ``recover`` undoes it (every new dataset destroyed, every folder renamed back)
unless every copy was verified, in which case it finishes it. Either way the containers that
were running run again.
"""
