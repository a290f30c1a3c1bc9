#!/bin/sh
#SBATCH --job-name=orchestra
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --exclusive
#SBATCH --time=00:01:30
#SBATCH --output=/dev/null
#SBATCH --error=/dev/null
# Orchestra holds these nodes and places executions on them with srun --overlap;
# cancelling this job (scancel) ends every execution still running in it.
exec sleep 150
