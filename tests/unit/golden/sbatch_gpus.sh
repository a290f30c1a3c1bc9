#!/bin/sh
#SBATCH --job-name=orchestra-gpus
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=8
#SBATCH --gres=gpu:4
#SBATCH --mem=65536M
#SBATCH --time=02:00:00
#SBATCH --output=/dev/null
#SBATCH --error=/dev/null
#SBATCH --partition=gpu
# Orchestra holds these nodes and places executions on them with srun --overlap;
# cancelling this job (scancel) ends every execution still running in it.
exec sleep 7260
