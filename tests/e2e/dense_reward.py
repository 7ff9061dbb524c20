"""A dense toy reward for backend tests: the share of digit characters in the response, in [0, 1]."""


def compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs):
    if not solution_str:
        return 0.0
    return sum(ch.isdigit() for ch in solution_str) / len(solution_str)
