package kiln

import (
	"fmt"
	"runtime"

	"kiln.dev/kiln/raw"
)

// NcclIDBytes is the size of a data-parallel group id.
const NcclIDBytes = raw.KILN_NCCL_ID_BYTES

// NcclID creates a data-parallel group id (kiln_nccl_id_create): opaque bytes to hand to every
// rank's Trainer.JoinDataParallel. It needs a CUDA runtime and NCCL.
func (r *Runtime) NcclID() ([]byte, error) {
	ptr, err := r.handle()
	if err != nil {
		return nil, err
	}
	id := raw.NewKiln_nccl_id()
	defer raw.DeleteKiln_nccl_id(id)
	if err := call(func() status { return raw.Kiln_nccl_id_create(ptr, id) }); err != nil {
		return nil, err
	}
	out := make([]byte, NcclIDBytes)
	for k := range out {
		out[k] = byte(raw.Kiln_bind_nccl_id_byte(id, k))
	}
	runtime.KeepAlive(r)
	return out, nil
}

// JoinDataParallel joins a data-parallel group (kiln_trainer_join_data_parallel; kiln.h has the
// semantics): every rank calls it with the same id (from Runtime.NcclID on one rank) and
// worldSize and its own rank; it blocks until all have joined.
func (t *Trainer) JoinDataParallel(worldSize, rank int32, id []byte) error {
	return t.JoinDataParallelSharded(worldSize, rank, id, false)
}

// JoinDataParallelSharded is JoinDataParallel with shardOptimizerState (ZeRO-1): each rank keeps
// (and checkpoints) its slice of the AdamW state; every rank then calls SaveCheckpoint together.
func (t *Trainer) JoinDataParallelSharded(worldSize, rank int32, id []byte, shardOptimizerState bool) error {
	if len(id) != NcclIDBytes {
		return fmt.Errorf("kiln: the NCCL id holds %d bytes, expected %d", len(id), NcclIDBytes)
	}
	o := raw.NewKiln_data_parallel_options()
	defer raw.DeleteKiln_data_parallel_options(o)
	if err := call(func() status { return raw.Kiln_data_parallel_options_default(o) }); err != nil {
		return err
	}
	o.SetWorld_size(int(worldSize))
	o.SetRank(int(rank))
	if shardOptimizerState {
		o.SetShard_optimizer_state(1)
	}
	nid := o.GetId() // a view into o
	for k, b := range id {
		raw.Kiln_bind_nccl_id_set_byte(nid, k, int(b))
	}
	return t.with(func(p cTrainer) error {
		return call(func() status { return raw.Kiln_trainer_join_data_parallel(p, o) })
	})
}
