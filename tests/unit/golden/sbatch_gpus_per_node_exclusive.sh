#!/bin/sh
#SBATCH --job-name=orchestra-gpus
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=2
#SBATCH --gpus-per-node=1
#SBATCH --exclusive
#SBATCH --time=00:10:00
#SBATCH --output=/dev/null
#SBATCH --error=/dev/null
# Orchestra holds these nodes and places executions on them with srun --overlap;
# cancelling this job (scancel) ends every execution still running in it.
exec sleep 660
