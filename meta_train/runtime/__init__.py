"""How the programs run on the machine, not what they compute: sharding the
population over devices, XLA's compiler options and compilation cache, and
host-memory tuning. Nothing here changes a result beyond rounding."""
