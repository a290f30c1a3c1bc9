#!/bin/sh
#SBATCH --job-name=orchestra-cluster
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --exclusive
#SBATCH --time=04:00:00
#SBATCH --output=/dev/null
#SBATCH --error=/dev/null
#SBATCH --partition=cpu
#SBATCH --account=proj-42
#SBATCH --qos=normal
#SBATCH --constraint=haswell
#SBATCH --mem=0
# Orchestra holds these nodes and places executions on them with srun --overlap;
# cancelling this job (scancel) ends every execution still running in it.
exec sleep 14460
