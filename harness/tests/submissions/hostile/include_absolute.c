/* HOSTILE: #include of the solution by the grading machine's absolute path -- base: none */
#include KIT_SOLUTION
