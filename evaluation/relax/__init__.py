"""The relaxation engine every caller uses: MLFF calculators by name (:mod:`.calculators`),
relaxations and single points with per-structure failures (:mod:`.engine`), spread over worker
processes (:mod:`.parallel`); batched relaxations on torch-sim (:mod:`.batched`, its models in
:mod:`.torchsim_models`)."""
